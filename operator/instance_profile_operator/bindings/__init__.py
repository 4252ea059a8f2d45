"""The InstanceProfileBinding controller: registry, reconcile, outcomes, deletion and
uninstall, tied together by ``controller.Controller``."""
