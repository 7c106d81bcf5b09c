"""Shared test set-up: the import path, and guards that every test leaves the process clean.

Tests live in folders that mirror the package (``tests/callback`` for ``lightning_semvec/callback``
...); project-wide checks (docs, README, examples, benchmarks) stay at the top. Shared tiny models
and trainer settings are in ``tiny_models.py``.
"""

import sys
import threading
import time
from pathlib import Path

import pytest

# DDP workers re-import test modules by name, and a few tests share helpers with a sibling
# folder's test module: keep tests/ and each of its folders importable (basenames are unique).
TESTS = Path(__file__).parent
for folder in [TESTS, *sorted(p for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))]:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# Threads that libraries start once per process and keep on purpose; ours never outlive a test.
_LIBRARY_THREADS = ("pydevd", "tqdm_monitor", "QueueFeederThread", "Thread-ProfilerThread", "asyncio_", "ThreadPoolExecutor")


def _left_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.is_alive() and not thread.name.startswith(_LIBRARY_THREADS)
        and not type(thread).__module__.startswith(("tensorboard", "torch.utils.tensorboard"))
    ]


@pytest.fixture(autouse=True)
def leaves_no_thread_or_process_group():
    """Fail a test that leaves a thread running or a ``torch.distributed`` process group open.

    As Lightning's own ``conftest.py`` does (``thread_police_duuu_daaa_duuu_daaa`` and its
    process-group teardown): a leftover would leak into every later test.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0  # a worker that is finishing gets a moment to exit
    while _left_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _left_threads(before)
    problems = []
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            problems.append("a torch.distributed process group")
    problems += [f"thread {thread.name!r} ({type(thread).__module__}.{type(thread).__qualname__})" for thread in left]
    if problems:
        pytest.fail("the test left " + ", ".join(problems) + " behind: close it in the test or the code", pytrace=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a small CNN trained for 3 steps on the digits."""
    import lightning.pytorch as pl
    from tiny_models import trainer_kwargs

    from lightning_semvec.data import DigitsDataModule
    from lightning_semvec.models import ImageClassifier

    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(**trainer_kwargs(max_steps=3, max_epochs=None))
    trainer.fit(ImageClassifier("small_cnn_student"), DigitsDataModule(batch_size=32))
    path = tmp_path_factory.mktemp("ckpt") / "epoch=0-step=3.ckpt"
    trainer.save_checkpoint(path)
    return path
