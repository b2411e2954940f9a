"""`python -m services.scheduler`: fires due occurrences and dispatches them to executors."""

from schedcore.server import run_main
from services.scheduler.app import build

if __name__ == "__main__":
    run_main("scheduler", build, default_port=50052)
