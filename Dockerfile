# The operator image: a virtualenv built from the pinned constraints, copied into a slim runtime.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/operator
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
RUN /opt/operator/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
COPY --from=build /opt/operator /opt/operator
ENV PATH=/opt/operator/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["instance-profile-operator"]
CMD ["run", "--all-namespaces", "--liveness-endpoint", "http://0.0.0.0:8080/healthz"]
