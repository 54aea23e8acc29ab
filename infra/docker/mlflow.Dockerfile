# MLflow tracking server image for infra/mlflow/mlflow.yaml: MLflow with the basic-auth app
# (mlflow[auth]) and the PostgreSQL driver, which the upstream MLflow image does not ship.
#
#   docker build -f infra/docker/mlflow.Dockerfile -t ghcr.io/xrp/mlflow:3.17.2 infra/docker
#
# Keep MLFLOW_VERSION close to the MLflow that xrp's image installs (clients and server of
# different minor versions mostly work, the same version always does).
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary>=2.9"

RUN groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlflow mlflow

WORKDIR /home/mlflow
USER 1000:1000

EXPOSE 5000
CMD ["mlflow", "server", "--help"]
