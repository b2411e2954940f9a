# syntax=docker/dockerfile:1
# One Dockerfile, one image per service: build a target with
#   docker build --target api -t scheduler-suite-api:0.1.0 .
# (targets: api, scheduler, executor, ui; docs/deploy.md). Each image runs exactly the command the
# tests and `make run` run (tests/deploy/test_dockerfile.py checks it): `python -m services.<name>`
# from the project's root, or the ui's `python -m streamlit run ui/app.py ...` (run_local.ui_args).

# Pinned: the base of every stage. Bump it and rebuild for security updates.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv with the pinned dependencies, and the generated protobuf code --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The dependencies from pyproject.toml, then the project's metadata alone: installed while no
# code is in /src, it puts no package in the venv (the services run from /app like they do from a
# checkout), only the dist-info whose version tasksched_build_info reports (docs/metrics.md).
# Its `schedctl` script does not work here: cli/ is not in the images. This layer is rebuilt only
# when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(d['dependencies']))" > requirements.txt \
 && python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(d['optional-dependencies']['ui']))" > requirements-ui.txt \
 && pip install -r requirements.txt \
 && pip install --no-deps .
COPY protos ./protos
COPY tools/gen_protos.py ./tools/
COPY schedcore ./schedcore
COPY services ./services
# The same generator `make proto` runs; schedcore/gen/ is never copied from the build context.
RUN rm -rf schedcore/gen && python tools/gen_protos.py && python -m compileall -q schedcore services

# ---- build-ui: the same plus Streamlit, for the dashboard only ---------------------------------
FROM build AS build-ui
RUN pip install -r requirements-ui.txt
COPY ui ./ui
RUN python -m compileall -q ui

# ---- runtime: no compilers, no pip cache, no sources but the code; a non-root user -------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/schedcore ./schedcore
COPY --from=build /src/services ./services
USER 10001:10001

FROM runtime AS api
EXPOSE 50051 9464 9465 8081
ENTRYPOINT ["python", "-m", "services.api"]

FROM runtime AS scheduler
EXPOSE 50052 9464 8081
ENTRYPOINT ["python", "-m", "services.scheduler"]

FROM runtime AS executor
EXPOSE 50053 9464 8081
ENTRYPOINT ["python", "-m", "services.executor"]

FROM runtime AS ui
COPY --from=build-ui /opt/venv /opt/venv
COPY --from=build-ui /src/ui ./ui
EXPOSE 8501
ENTRYPOINT ["python", "-m", "streamlit", "run", "ui/app.py", "--server.port", "8501", "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
