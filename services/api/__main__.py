"""`python -m services.api`: the public gRPC API."""

from schedcore.server import run_main
from services.api.app import build

if __name__ == "__main__":
    run_main("api", build, default_port=50051)
