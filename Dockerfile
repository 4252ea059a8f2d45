# The operator image: its wheel and pinned dependencies, installed offline into a virtualenv
# that is copied onto a clean copy of the base. Nothing is downloaded during the build.
#
# The build context must hold wheelhouse/: the operator's wheel, every runtime dependency at
# the version constraints.txt pins, and pip's own wheel (the build runs pip from it, so the
# image never carries pip). `make image` prepares it and builds on a small Debian base:
#   python -m instance_profile_operator.devenv.image build
# Elsewhere, with Docker and any CPython 3.11 base that has python3 on PATH:
#   pip wheel -c constraints.txt --wheel-dir wheelhouse . pip
#   docker build .
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
COPY wheelhouse /wheelhouse
RUN python3 -m venv --without-pip /opt/operator \
 && pip_wheel=$(echo /wheelhouse/pip-*.whl) \
 && /opt/operator/bin/python3 "$pip_wheel/pip" install --no-index --find-links /wheelhouse \
      --no-cache-dir --disable-pip-version-check instance-profile-operator

FROM ${BASE}
COPY --from=build /opt/operator /opt/operator
# USER names the process for kopf (getpass.getuser()), whatever uid it runs as: 65532 has no
# passwd entry, and a cluster may pick another uid (runAsUser) anyway.
ENV PATH=/opt/operator/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 USER=instance-profile-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["instance-profile-operator"]
CMD ["run", "--all-namespaces", "--liveness-endpoint", "http://0.0.0.0:8080/healthz"]
