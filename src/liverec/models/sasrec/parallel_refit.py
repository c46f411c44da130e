"""``fit``'s refit in a second process, run beside the selection instead of after it.

``fit`` trains twice: once on the training events, judged on validation after every epoch to choose the
epoch count (the selection), and then afresh, same seed, for that many epochs on the training and validation
events together (the refit, :meth:`SASRec.refit_on`). The refit's epoch ``e`` does not depend on how many
epochs it will run, so it can run beside the selection (started after its first epoch where that took at least
``parallel_refit_from_s``: ``SASRec``'s ``_RefitBeside``) and keep, of the epochs it has trained, the one the
selection judges best so far. On a small catalogue a training step is a few hundred small operations that a
second thread barely speeds up (Amazon Beauty: an epoch took 8.2 s at one thread and 8.5 s at two on session
34's machine), so two processes of one thread each finish both trainings in about the selection's time
(docs/results.md, "Session 34").

The parent (:class:`RefitProcess`) starts ``python -m liverec.models.sasrec.parallel_refit SETUP`` (a pickle
in a temporary file: the config, the item features, the interactions) and talks to it by pickles over its
stdin and stdout:

* parent to child, one per epoch of the selection: ``("judged", epoch, improved)``; at the end ``("stop",
  best_epoch)``;
* child to parent, once: ``("state", epoch, network, optimizer, steps)`` (the weights as :meth:`SASRec.fit`
  leaves them after a refit of ``epoch`` epochs: the weight average applied, the optimiser's moments, its step
  count), or ``("error", text)``.

The child closes its epoch ``e`` only once it knows the selection's verdict on ``e`` (:class:`Verdicts`), so it
holds one copy of the weights at a time: the best epoch's so far. What runs in the child is the refit itself
(``SASRec._train`` on the same data, seed and settings), one thread; where the parent also trains at one thread,
the result is the serial refit's to the bit (``tests/models/test_sasrec_parallel_refit.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from liverec.data.interactions import Interactions
    from liverec.models.sasrec.config import SASRecConfig
    from liverec.models.sasrec.model import SASRec, WeightAverage

#: the child's command line, before the setup file's path
COMMAND = [sys.executable, "-m", "liverec.models.sasrec.parallel_refit"]


class RefitFailed(RuntimeError):
    """The refit process could not deliver its weights (it failed to start, died or reported an error)."""


@dataclasses.dataclass(frozen=True)
class RefitState:
    """What a refit of ``epoch`` epochs leaves: the network's weights (averaged), the optimiser's state and its
    step count."""

    epoch: int
    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    steps: int


class RefitProcess:
    """The parent's end: starts the child, passes it the selection's verdicts, takes its weights."""

    def __init__(
        self,
        config: SASRecConfig,
        interactions: Interactions,
        item_features: Any = None,
        feature_names: list[str] | None = None,
    ) -> None:
        """Start refitting ``interactions`` (training and validation events, sized as the refit's) with ``config``
        (its ``n_threads``: the child's). Raises :class:`RefitFailed` if the child cannot be started."""
        #: the child's torch threads
        self.threads = max(config.n_threads, 1)
        self._setup = tempfile.NamedTemporaryFile(prefix="liverec-refit-", suffix=".pickle", delete=False)
        self._stderr = tempfile.TemporaryFile()
        self._failure: str | None = None
        try:
            with self._setup as file:
                pickle.dump((config, interactions, item_features, feature_names), file, pickle.HIGHEST_PROTOCOL)
            env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
            env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)  # the parent's liverec
            self._process = subprocess.Popen(
                [*COMMAND, self._setup.name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as error:  # what pickle.dump raises
            self.close()
            raise RefitFailed(f"could not start the refit process: {error}") from error

    def judged(self, epoch: int, improved: bool, average: WeightAverage | None = None) -> bool:
        """Tell the child the selection's verdict on ``epoch`` (an ``on_epoch`` hook of ``SASRec._train``: it never
        asks to stop; a child that died is reported by :meth:`finish`)."""
        self._send(("judged", epoch, improved))
        return False

    def finish(self, best_epoch: int) -> RefitState:
        """The refit's weights after ``best_epoch`` epochs (waits while the child gets there)."""
        self._send(("stop", best_epoch))
        if self._failure is None:
            try:
                reply = pickle.load(self._stdout)
            except Exception as error:  # EOFError where the child died; anything unpickling may raise
                self._failure = f"it ended without its weights ({type(error).__name__})"
            else:
                if reply[0] == "state" and reply[1] == best_epoch:
                    self.close()
                    return RefitState(*reply[1:])
                self._failure = reply[1] if reply[0] == "error" else f"it sent the weights of epoch {reply[1]}"
        self._stop()
        failure = f"the refit process failed: {self._failure}{self._stderr_tail()}"
        self.close()
        raise RefitFailed(failure)

    def close(self) -> None:
        """Stop the child if it still runs; remove the setup file and the child's output (again: nothing)."""
        self._stop()
        self._stderr.close()
        with contextlib.suppress(OSError):
            os.unlink(self._setup.name)

    def _stop(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # type: ignore[union-attr]
            if process.poll() is None:
                process.kill()
            process.wait()
            with contextlib.suppress(OSError):
                process.stdout.close()  # type: ignore[union-attr]

    @property
    def _stdout(self) -> IO[bytes]:
        return self._process.stdout  # type: ignore[return-value]

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._failure is not None:
            return
        try:
            pickle.dump(message, self._process.stdin)  # type: ignore[arg-type]
            self._process.stdin.flush()  # type: ignore[union-attr]
        except OSError as error:  # the child is gone: finish reports it
            self._failure = f"it stopped reading ({error})"

    def _stderr_tail(self, limit: int = 2000) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its last output: {text[-limit:]}" if text else ""


class Verdicts:
    """The child's view of the selection: which epochs it judged best so far, and, once it stopped, its choice.

    ``messages``: the parent's messages, read one at a time, only when a verdict not yet known is asked for."""

    def __init__(self, messages: Iterator[tuple[Any, ...]]) -> None:
        self._messages = messages
        self._improved: dict[int, bool] = {}
        #: the epoch the selection chose, once it has stopped (None until then)
        self.chosen: int | None = None

    def keep(self, epoch: int) -> bool:
        """Whether the refit's weights after ``epoch`` are to be kept (in place of any kept before): the epoch is
        the best so far, or the chosen one. Waits for the verdict on ``epoch``, or for the selection's end."""
        while epoch not in self._improved and self.chosen is None:
            self._read()
        if self.chosen is not None:
            return epoch == self.chosen
        return self._improved[epoch]

    def choice(self) -> int:
        """The epoch the selection chose (waits for it)."""
        while self.chosen is None:
            self._read()
        return self.chosen

    def _read(self) -> None:
        message = next(self._messages)
        if message[0] == "judged":
            self._improved[message[1]] = bool(message[2])
        elif message[0] == "stop":
            self.chosen = int(message[1])
        else:
            raise ValueError(f"refit: unexpected message {message!r}")

    def done(self, epoch: int) -> bool:
        """Whether the refit needs no epoch after ``epoch``."""
        return self.chosen is not None and epoch >= self.chosen


def _messages(stream: IO[bytes]) -> Iterator[tuple[Any, ...]]:
    while True:
        try:
            yield pickle.load(stream)
        except EOFError:  # the parent went away: nothing is left to refit for
            raise SystemExit(0) from None


def refit(model: SASRec, interactions: Interactions, verdicts: Verdicts) -> RefitState:
    """Train ``model`` afresh on ``interactions`` as its refit does, keeping the weights ``verdicts`` ask for, until
    they say to stop."""
    kept: list[RefitState] = []

    def on_epoch(epoch: int, improved: bool, average: WeightAverage | None) -> bool:
        if verdicts.keep(epoch):
            kept[:] = [_snapshot(model, epoch, average)]
        return verdicts.done(epoch)

    model._train(interactions, None, model.config.max_epochs, on_epoch)
    chosen = verdicts.choice()  # where the selection ran to max_epochs, its stop comes after the last epoch
    if not kept or kept[0].epoch != chosen:
        raise RuntimeError(f"refit: the weights of epoch {chosen} were not kept")
    return kept[0]


def _snapshot(model: SASRec, epoch: int, average: WeightAverage | None) -> RefitState:
    network = model._net()
    with average.applied() if average is not None else contextlib.nullcontext():
        weights = {name: value.detach().clone() for name, value in network.state_dict().items()}
    return RefitState(epoch, weights, copy.deepcopy(model._optimizer().state_dict()), model._steps)


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m liverec.models.sasrec.parallel_refit SETUP`` (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the replies
    try:
        from liverec.models.sasrec.model import SASRec

        with open(args[0], "rb") as file:
            config, interactions, item_features, feature_names = pickle.load(file)
        model = SASRec(config)
        if item_features is not None:
            model.set_item_features(item_features, feature_names)
        state = refit(model, interactions, Verdicts(_messages(sys.stdin.buffer)))
        reply: tuple[Any, ...] = ("state", state.epoch, state.network, state.optimizer, state.steps)
    except Exception:  # reported to the parent, which refits in its own process instead
        reply = ("error", traceback.format_exc(limit=-3).strip())
    pickle.dump(reply, replies, pickle.HIGHEST_PROTOCOL)
    replies.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
