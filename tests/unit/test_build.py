"""staging_replacements(): which k8s.io modules the wrapper go.mod pins to published versions."""

from __future__ import annotations

import pytest

from instance_profile_operator.devenv.build import staging_replacements

GO_MOD = """\
module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/spf13/cobra v1.9.1
\tgo.etcd.io/etcd/client/v3 v3.6.8
\tk8s.io/api v0.0.0
\tk8s.io/apimachinery v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/component-base v0.0.0
\tk8s.io/kube-openapi v0.0.0-20250710124328-f3f2b991d03b
\tk8s.io/utils v0.0.0-20250604170112-4c0f3b243397
\tk8s.io/klog/v2 v2.130.1
\tgithub.com/example/zero v0.0.0
)

require (
\tk8s.io/cri-client v0.0.0 // indirect
\tk8s.io/kms v0.0.0 // indirect
\tk8s.io/gengo/v2 v2.0.0-20250604051438-85fd79dbfd9f // indirect
\tgithub.com/other/thing v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


@pytest.fixture(scope="module")
def replacements() -> dict[str, str]:
    return staging_replacements(GO_MOD, "v1.36.3")


def test_staging_modules_at_v0_0_0_are_replaced(replacements):
    for module in ("k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/component-base"):
        assert replacements[module] == "v0.36.3"


def test_indirect_requires_are_replaced(replacements):
    assert replacements["k8s.io/cri-client"] == "v0.36.3"
    assert replacements["k8s.io/kms"] == "v0.36.3"


@pytest.mark.parametrize(
    "module",
    ["k8s.io/kube-openapi", "k8s.io/utils", "k8s.io/gengo/v2", "k8s.io/klog/v2"],
)
def test_pseudo_and_real_versions_are_left_alone(replacements, module):
    assert module not in replacements


@pytest.mark.parametrize("module", ["github.com/example/zero", "github.com/other/thing", "k8s.io/kubernetes"])
def test_non_k8s_modules_are_ignored(replacements, module):
    assert module not in replacements


def test_replace_directives_are_not_requires(replacements):
    # "k8s.io/api => ./staging/..." must not add anything beyond the requires above
    assert set(replacements) == {
        "k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/component-base",
        "k8s.io/cri-client", "k8s.io/kms",
    }


def test_replacements_are_sorted_and_unique():
    text = "require (\n\tk8s.io/b v0.0.0\n\tk8s.io/a v0.0.0\n\tk8s.io/b v0.0.0\n)\n"
    assert list(staging_replacements(text, "v1.30.0")) == ["k8s.io/a", "k8s.io/b"]


@pytest.mark.parametrize(("version", "staging"), [("v1.36.3", "v0.36.3"), ("v1.30.0", "v0.30.0"), ("v1.9.12", "v0.9.12")])
def test_staging_version_follows_the_kubernetes_release(version, staging):
    assert staging_replacements("require (\n\tk8s.io/api v0.0.0\n)\n", version) == {"k8s.io/api": staging}


@pytest.mark.parametrize("version", ["v1.36.3-rc.1", "v1.36", "1.36.3", "v2.0.0", "v1.36.3-alpha.0", "latest", ""])
def test_non_release_version_raises(version):
    with pytest.raises(ValueError):
        staging_replacements(GO_MOD, version)
