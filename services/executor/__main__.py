"""`python -m services.executor`: runs attempts the schedulers push to it."""

from schedcore.server import run_main
from services.executor.app import build

if __name__ == "__main__":
    run_main("executor", build, default_port=50053)
