"""`python -m services.api`: the public gRPC API, in API_PROCESSES server processes."""

from schedcore.server import run_main
from services.api.app import build

if __name__ == "__main__":
    run_main("api", build, default_port=50051, processes=lambda settings: settings.api_processes)
