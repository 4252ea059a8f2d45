"""The InstanceProfileBindingSet controller: one child binding per instance a set's tags select."""
