"""`python -m services.executor`: runs attempts the schedulers push to it."""

from schedcore.server import run_main
from services.executor.app import build
from services.executor.isolation import make_non_dumpable

if __name__ == "__main__":
    # First, before it runs any program: /proc/<this process> closes to other processes of its uid.
    make_non_dumpable()
    run_main("executor", build, default_port=50053)
