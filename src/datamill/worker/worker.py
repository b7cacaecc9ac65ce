"""The worker: claim executions, run them in work horses, heartbeat, reconcile."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from datamill.domain.records import Execution, JobConfiguration
from datamill.domain.runlog import PendingEvent
from datamill.domain.schedule import next_fire_time
from datamill.domain.status import JobStatus
from datamill.engine.base import RunRequest, RunResult
from datamill.engine.objects import discard
from datamill.engine.registry import interrupt
from datamill.engine.windows import remove_windows_of
from datamill.errors import DatamillError
from datamill.processes import pid_alive
from datamill.services.wakeup import PostgresListener, Wakeup, libpq_conninfo
from datamill.settings import Settings
from datamill.store.db import utcnow
from datamill.store.executions import active_executions, notify_other_nodes
from datamill.store.queue import Outcome
from datamill.store.store import Store
from datamill.store.triggers import fire_due_schedules
from datamill.worker.horse import RETRYABLE, Horse, HorseDied, run_result
from datamill.worker.housekeeping import (
    drop_old_history,
    expire_old_results,
    forget_expired_keys,
    remove_deleted_files,
    remove_orphaned_data_folders,
    remove_stale_staging,
)
from datamill.worker.inputs import build_request
from datamill.worker.limits import EffectiveLimits, effective_limits, run_bytes, staged_bytes
from datamill.worker.observe import RunObserver, job_path
from datamill.worker.runlog import RunLog, claimed, folder_names

log = logging.getLogger(__name__)

# What a claim's preparation gives: the engine request (or why the run cannot
# run) and the job's path; a claimed run with it; the preparation itself.
Prepared = tuple[RunRequest | str, str | None]
Claimed = tuple[Execution, Prepared]
Prepare = Callable[[Connection, Execution], Prepared]

STOPPED_BY_USER = "Stopped by user."
# How often a running execution's staged output is measured against its limit.
OUTPUT_CHECK_SECONDS = 1.0
# How long a running execution's events may wait for a progress write to carry them.
LOG_WRITE_SECONDS = 1.0
# How long a slot waits for an engine to cancel a killed run's work elsewhere.
INTERRUPT_WAIT_SECONDS = 10.0


@dataclasses.dataclass
class _Slot:
    """What one slot's thread carries from run to run."""

    # A run the last finish claimed in its own commit, to run next.
    following: Claimed | None = None


class Worker:
    """Runs up to `settings.concurrency` executions at once, each in a warm child process."""

    def __init__(self, store: Store, settings: Settings, wakeup: Wakeup | None = None) -> None:
        self.store = store
        self.settings = settings
        self.wakeup = wakeup or Wakeup()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._closing = threading.Event()
        self._draining_deadline: float | None = None
        self._threads: list[threading.Thread] = []
        self._stop_ids: set[int] = set()
        # Executions this worker's slots hold; an id is added inside the claim's
        # transaction, before its commit, so a RUNNING execution of this worker
        # that is not here was claimed by a commit whose answer got lost.
        # Counted, not a set: a run retried at once (retryDelay 0) can be claimed
        # by another slot before the first slot has let go of it, and the first
        # slot's release must not drop the second slot's claim (the heartbeat
        # would hand a run back while it runs).
        self._running: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._listener: PostgresListener | None = None
        self._observe = RunObserver(store, self.id)
        # Execution id -> its log's events not yet written (set at the claim).
        self._logs: dict[int, RunLog] = {}

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Register, reconcile what earlier workers left, and start the threads."""
        self.settings.ensure_folders()
        self.store.queue.register_worker(self.id, socket.gethostname(), os.getpid())
        self.store.metrics.slots_added(self.settings.concurrency)
        self.reconcile()
        if not self.store.db.is_sqlite:
            self._listener = PostgresListener(libpq_conninfo(self.store.db.url), self.wakeup)
            self._listener.start()
        for slot in range(self.settings.concurrency):
            self._spawn(self._slot_loop, f"datamill-slot-{slot}")
        self._spawn(self._heartbeat_loop, "datamill-heartbeat")
        log.info("worker %s started with %d slots", self.id, self.settings.concurrency)

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; let running executions finish within the grace, hand back the rest."""
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self._draining_deadline = time.monotonic() + grace
        self._closing.set()
        self.wakeup.notify_work()
        # The heartbeat thread sleeps a heartbeat between beats (an hour, if so
        # configured); it wakes for a stop request, and so for this one.
        self.wakeup.stop_requested.set()
        for thread in self._threads:
            thread.join()
        if self._listener is not None:
            self._listener.close()
        try:
            self.store.queue.unregister_worker(self.id)
        except Exception:  # the database may be gone; reconciliation will cope
            log.exception("could not unregister worker %s", self.id)
        self.store.metrics.slots_removed(self.settings.concurrency)
        log.info("worker %s stopped", self.id)

    def reconcile(self) -> list[int]:
        """Retry, or end in ERROR, the running executions of workers that are gone."""
        lost = self.store.queue.reconcile_lost_workers(
            dt.timedelta(seconds=self.settings.worker_lost_seconds),
            is_local_pid_alive=pid_alive,
            hostname=socket.gethostname(),
            staging_root=str(self.settings.staging_root),
            alive_worker_id=self.id,
            retry_policy=self.settings.retry_policy,
        )
        if lost:
            log.warning("executions %s lost their worker: retried or ended in ERROR", lost)
            self.wakeup.notify_work()
        return lost

    # ------------------------------------------------------------ threads

    def housekeep(self) -> None:
        """Expire old results, remove deleted data files and stale staging folders.

        Each task runs alone: one that fails is logged and the others still run.
        """
        self._alone("expiring old results", lambda: expire_old_results(self.store))
        self._alone("removing deleted data", lambda: remove_deleted_files(self.store))
        self._alone("removing stale staging folders", self._remove_stale_staging)
        self._alone(
            "removing orphaned data folders", lambda: remove_orphaned_data_folders(self.store)
        )
        self._alone(
            "dropping old history", lambda: drop_old_history(self.store, self.settings.history_days)
        )
        self._alone("forgetting expired idempotency keys", lambda: forget_expired_keys(self.store))

    def _remove_stale_staging(self) -> None:
        with self.store.db.read() as conn:
            running = {e.id for e in active_executions(conn)}
        remove_stale_staging(self.settings.staging_root, running)

    def fire_schedules(self) -> list[int]:
        """Queue the scheduled jobs whose time has come."""
        zone = self.settings.timezone
        with self.store.db.write() as conn:
            created = fire_due_schedules(
                conn, utcnow(), lambda cron, now: next_fire_time(cron, now, zone)
            )
            if created:
                notify_other_nodes(conn, "work")
        if created:
            self.wakeup.notify_work()
        return created

    def _heartbeat_loop(self) -> None:
        beats = 0
        next_housekeeping = time.monotonic()
        while not self._closing.is_set():
            # Each periodic task fails alone: a schedule or a housekeeping task
            # that raises must not stop the heartbeat or lost-worker detection.
            self._alone("heartbeat", self._beat)
            self._alone("firing schedules", self.fire_schedules)
            beats += 1
            if beats % 5 == 0:
                self._alone("reconciliation", self.reconcile)
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + self.settings.housekeeping_seconds
                self.housekeep()
            # A stop request wakes us early so it takes effect at once.
            if self.wakeup.stop_requested.wait(self.settings.heartbeat_seconds):
                self.wakeup.stop_requested.clear()

    def _beat(self) -> None:
        running = self.store.queue.heartbeat(self.id)
        self.store.metrics.heartbeat()
        with self._lock:
            self._stop_ids |= {i for i, stop in running.items() if stop}
            stranded = {i for i in running if self._running[i] <= 0}
        self._hand_back_stranded(stranded)

    @staticmethod
    def _alone(what: str, task: Callable[[], object]) -> None:
        try:
            task()
        except Exception:
            log.exception("%s failed; the other periodic tasks go on", what)

    def _slot_loop(self) -> None:
        horse: Horse | None = None
        slot = _Slot()
        # A run claimed with the last one's finish is this slot's, RUNNING: it
        # runs even once the worker is closing, as a run claimed a moment
        # earlier would (the shutdown grace applies).
        while not self._closing.is_set() or slot.following is not None:
            try:
                if horse is None or not horse.alive:
                    # Started before work arrives, so a run does not pay for
                    # spawning a process and importing the engine.
                    horse = Horse(self.settings.engine)
                if not horse.wait_ready(0.2):
                    # Nothing is claimed for a child still importing: the run
                    # would sit RUNNING meanwhile, and another worker may be warm.
                    continue
                horse = self._claim_and_run(horse, slot)
            except Exception:
                # A slot must outlive any single failure, or its runs would stop.
                log.exception("worker slot failed; going on")
                time.sleep(self.settings.poll_seconds)
        if horse is not None:
            horse.kill()

    def _hand_back_stranded(self, stranded: set[int]) -> None:
        for execution_id in sorted(stranded):
            reason = "the answer to its claim was lost"
            if self.store.queue.hand_back(execution_id, self.id, reason):
                log.warning("execution %d handed back: its claim's answer was lost", execution_id)
                self._observe.handed_back(execution_id)
                self.wakeup.notify_work()

    def _prepare(self, conn: Connection, execution: Execution) -> Prepared:
        """The engine request of a claimed execution, or why it cannot run; the job's path.

        The claim and the data the run reads go to its log with its next write
        (progress, or the finish for a short run): the claim's own transaction
        stays as short as it was, and so does the wait from trigger to RUNNING.
        """
        with self._lock:
            self._running[execution.id] += 1
        config: JobConfiguration | None = None
        path: str | None = None
        events: list[PendingEvent] = []
        try:
            # The job's path comes with its configuration (a job file keeps its
            # configuration for life): one read per claim, not two.
            config, path = self.store.jobs.get_with_path(conn, execution.job_configuration_id)
            request: RunRequest | str = build_request(
                conn, self.store, self.settings, execution, config, events
            )
        except DatamillError as error:
            request = error.message
        names = (
            folder_names(config, request, self.settings)
            if config and not isinstance(request, str)
            else {}
        )
        run_log = RunLog(names)
        for event in [*claimed(execution, self.id, config), *events]:
            run_log.add(event)
        with self._lock:
            self._logs[execution.id] = run_log
        return request, path if config is not None else job_path(conn, execution)

    def _release(self, execution_id: int) -> bool:
        """Let go of one claim of the run (under the lock); True if no slot holds it now."""
        self._running[execution_id] -= 1
        if self._running[execution_id] > 0:
            return False
        del self._running[execution_id]
        return True

    def _claiming(
        self, claim: Callable[[Prepare], tuple[Any, Claimed | None]]
    ) -> tuple[Any, Claimed | None]:
        """Run `claim` (a store call that claims through the given prepare) with the bookkeeping.

        Returns what `claim` returns; the claimed run, if any, is in this
        worker's running set and has its pending log.
        """
        claiming: list[int] = []

        def prepare(conn: Connection, execution: Execution) -> Prepared:
            claiming.append(execution.id)
            return self._prepare(conn, execution)

        try:
            answer, claimed = claim(prepare)
        except Exception:
            # Rolled back, or committed with the answer lost: in the second
            # case the next heartbeat finds the run RUNNING here and hands it back.
            with self._lock:
                for execution_id in claiming:
                    self._release(execution_id)
                    self._logs.pop(execution_id, None)
            raise
        with self._lock:
            # Claims rolled back and retried on another run leave no pending log.
            for execution_id in claiming:
                if claimed is None or execution_id != claimed[0].id:
                    self._release(execution_id)
                    self._logs.pop(execution_id, None)
        return answer, claimed

    def _claim_and_run(self, horse: Horse, slot: _Slot) -> Horse | None:
        """Claim (unless the last finish did) and run the slot's next run; the horse if reusable."""
        claimed, slot.following = slot.following, None
        if claimed is None:
            generation = self.wakeup.generation
            # shutdown() sets _closing before it announces work, so a slot that
            # read the generation after that announcement sees _closing here.
            # Without this check, a slot that passed its loop's test just before
            # the shutdown (waiting for a new horse, say) would claim nothing and
            # then sleep a whole poll: an hour-long poll outlived the grace.
            if self._closing.is_set():
                return horse
            _, claimed = self._claiming(
                lambda prepare: (None, self.store.queue.claim_and_prepare(self.id, prepare))
            )
            if claimed is None:
                # Announcements made since `generation` was read end the wait at once.
                self.wakeup.wait_for_work(self.settings.poll_seconds, generation)
                return horse
        execution, (request, path) = claimed
        self._observe.started(execution, request, path)
        try:
            reusable = self._run(execution, request, horse, slot)
        except OperationalError as error:
            # The store went away before the run started (a database restart):
            # nothing ran, so the run goes back to the queue rather than failing.
            # Other database errors are not passing ones and end the run below.
            log.warning("execution %d handed back: the store failed: %s", execution.id, error)
            self._hand_back_when_possible(execution, "the metadata store failed")
            reusable = horse
        except Exception as error:
            log.exception("execution %d failed inside the worker", execution.id)
            horse.kill()
            self._finish(
                execution, Outcome(JobStatus.ERROR, error_message=f"internal error: {error}")
            )
            reusable = None
        finally:
            with self._lock:
                if self._release(execution.id):
                    # Not while another slot holds a new claim of it (a retry
                    # claimed at once): that claim's log is its own.
                    self._logs.pop(execution.id, None)
            self._observe.slot_free(execution.id)
        # The configuration's slot is free again: its next run may start.
        self.wakeup.notify_work()
        return reusable

    # ------------------------------------------------------------ one execution

    def _run(
        self, execution: Execution, request: RunRequest | str, horse: Horse, slot: _Slot
    ) -> Horse | None:
        """Run one claimed execution to a terminal state; returns the horse if reusable.

        With a reusable horse the finish claims the slot's next run (see _finish).
        """
        if isinstance(request, str):
            self._finish(execution, Outcome(JobStatus.ERROR, error_message=request))
            return horse
        staging = self.settings.staging_root / str(execution.id)
        try:
            os.makedirs(staging)
        except FileExistsError:
            # Left by an earlier attempt of this execution (handed back), or
            # anything else in the way: the staging root is Datamill's own.
            if os.path.isdir(staging) and not os.path.islink(staging):
                shutil.rmtree(staging, ignore_errors=True)
            else:
                os.unlink(staging)
            try:
                os.makedirs(staging)
            except OSError:
                message = "the run's staging folder could not be made"
                self._finish(execution, Outcome(JobStatus.ERROR, error_message=message))
                return horse
        reusable: Horse | None = horse
        # The horse's engine session (Spark's, one for all its runs), which a kill
        # below cancels too: the horse runs one request at a time, so the session
        # holds this run's work only.
        request = dataclasses.replace(request, horse_session=horse.session)
        try:
            horse.send(request)
            limits = effective_limits(request.definition, self.settings)
            outcome, reusable = self._await(
                execution, horse, limits, request.staging_dir, self._log_of(execution.id)
            )
        except HorseDied as died:
            outcome, reusable = Outcome(JobStatus.ERROR, error_message=str(died)), None
        if reusable is None:
            # A child killed (or dead) mid-run leaves its window behind, with
            # links that keep the run's inputs alive and the run's partial output.
            horse.kill()
            remove_windows_of(os.path.dirname(request.staging_dir), horse.process.pid or 0)
            # Work a cluster still does for it goes too, before the staging
            # folder; an unreachable cluster holds the slot INTERRUPT_WAIT_SECONDS at most.
            cancel = threading.Thread(
                target=self._alone,
                args=(
                    f"cancelling the engine work of execution {execution.id}",
                    partial(interrupt, request),
                ),
                name="engine-interrupt",
                daemon=True,
            )
            cancel.start()
            cancel.join(INTERRUPT_WAIT_SECONDS)
        if outcome is None:  # handed back during shutdown
            shutil.rmtree(staging, ignore_errors=True)
            return None
        if not outcome.status.is_success:
            # Gone before the run shows as ended: a failed run leaves no output behind.
            shutil.rmtree(staging, ignore_errors=True)
        # A new child must import the engine before a run is claimed for it.
        self._finish(execution, outcome, slot if reusable is not None else None)
        if os.path.lexists(staging):  # published runs' staging folders moved away
            shutil.rmtree(staging, ignore_errors=True)
        return reusable

    def _log_of(self, execution_id: int) -> RunLog:
        with self._lock:
            return self._logs.setdefault(execution_id, RunLog())

    def _await(
        self,
        execution: Execution,
        horse: Horse,
        limits: EffectiveLimits,
        staging: str,
        run_log: RunLog,
    ) -> tuple[Outcome | None, Horse | None]:
        # Progress is written at most every 0.5 s, and not for runs shorter than that.
        last_progress = started = time.monotonic()
        # Killing the child stops any run, whether or not the engine heeds interrupts.
        deadline = started + limits.time_seconds
        next_output_check = started + OUTPUT_CHECK_SECONDS
        while True:
            if self._stop_asked(execution.id):
                horse.kill()
                return Outcome(JobStatus.CANCELED, error_message=STOPPED_BY_USER), None
            if self._draining_deadline is not None and time.monotonic() > self._draining_deadline:
                horse.kill()
                if self.store.queue.hand_back(
                    execution.id, self.id, "the worker shut down", run_log.take()
                ):
                    self._observe.handed_back(execution.id)
                log.info("execution %d handed back at shutdown", execution.id)
                return None, None
            now = time.monotonic()
            if now > deadline:
                horse.kill()
                log.info("execution %d stopped: %s", execution.id, limits.time_exceeded())
                return Outcome(JobStatus.ERROR, error_message=limits.time_exceeded()), None
            if now >= next_output_check:
                next_output_check = now + OUTPUT_CHECK_SECONDS
                staged = run_bytes(staging, horse.process.pid or 0)
                if staged > limits.output_bytes:
                    horse.kill()
                    reason = limits.output_exceeded(staged)
                    log.info("execution %d stopped: %s", execution.id, reason)
                    return Outcome(JobStatus.ERROR, error_message=reason), None
            if run_log.pending and now - last_progress >= LOG_WRITE_SECONDS:
                # Events while the progress stands still: written apart, now and then.
                last_progress = now
                self._write_events(execution.id, run_log)
            message = horse.receive(0.05)
            if message is None:
                continue
            if message[0] == "event":
                run_log.add(message[1])
                continue
            if message[0] == "progress":
                now = time.monotonic()
                if now - last_progress >= 0.5:
                    last_progress = now
                    # The run's events so far go with the progress: one write, not two.
                    events = run_log.take()
                    try:
                        self.store.queue.report_progress(execution.id, float(message[1]), events)
                    except Exception:
                        run_log.give_back(events)
                        log.exception("could not record progress")
                continue
            result = run_result(message)
            if isinstance(result, str):
                passing = message[0] == RETRYABLE
                return Outcome(JobStatus.ERROR, error_message=result, retryable=passing), horse
            # What finished between two checks is checked once more before publishing.
            staged = staged_bytes(staging)
            if staged > limits.output_bytes:
                # An object-store sink was uploaded already (hidden): it goes too.
                discard(self.settings.object_store, result.moves)
                return Outcome(JobStatus.ERROR, error_message=limits.output_exceeded(staged)), horse
            return _success(result, staging), horse

    def _write_events(self, execution_id: int, run_log: RunLog) -> None:
        events = run_log.take()
        try:
            self.store.queue.log_events(execution_id, events)
        except Exception:
            run_log.give_back(events)
            log.exception("could not write the run's log")

    def _stop_asked(self, execution_id: int) -> bool:
        with self._lock:
            if execution_id in self._stop_ids:
                self._stop_ids.discard(execution_id)
                return True
        return False

    def _hand_back_when_possible(self, execution: Execution, reason: str) -> None:
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            try:
                if self.store.queue.hand_back(execution.id, self.id, reason):
                    self._observe.handed_back(execution.id)
                return
            except Exception:
                log.exception(
                    "handing back execution %d failed (attempt %d)", execution.id, attempt
                )
                time.sleep(min(0.1 * 2 ** min(attempt, 5), 2.0))

    def _finish(self, execution: Execution, outcome: Outcome, slot: _Slot | None = None) -> None:
        """End the run in the store; with a slot, claim its next run in the same commit.

        The run claimed goes to `slot.following` as soon as it is committed.
        Only the first attempt claims: one that failed is retried as a finish
        alone, so a claim never holds up a run's end.
        """
        # The store may be briefly unreachable (a PostgreSQL restart): keep
        # trying rather than leave the run stranded. If this worker is closing
        # meanwhile, reconciliation by the next worker ends the run instead.
        run_log = self._log_of(execution.id)
        if outcome.retryable:
            final = self._retry(execution, outcome, run_log)
            if final is None:
                return
            outcome = final
        outcome = run_log.ending(outcome)
        attempt = 0
        while attempt == 0 or not self._closing.is_set():
            attempt += 1
            try:
                if attempt == 1 and slot is not None and not self._closing.is_set():
                    ended, slot.following = self._claiming(
                        partial(self.store.queue.finish_and_claim, execution, self.id, outcome)
                    )
                else:
                    ended = self.store.queue.finish(execution, self.id, outcome)
                if ended:
                    self._observe.ended(execution, outcome.status, outcome.error_message)
                else:
                    log.warning("execution %d was no longer ours to finish", execution.id)
                return
            except OSError:
                log.exception("publishing execution %d failed", execution.id)
                failed = Outcome(JobStatus.ERROR, error_message="publishing the data failed")
                outcome = run_log.ending(failed)
            except Exception:
                log.exception("finishing execution %d failed (attempt %d)", execution.id, attempt)
                time.sleep(min(0.1 * 2 ** min(attempt, 5), 2.0))

    def _retry(self, execution: Execution, outcome: Outcome, run_log: RunLog) -> Outcome | None:
        """After a passing failure: None if the run went back to the queue for another attempt.

        Otherwise the outcome to end it with: when its job allows no more, its
        message names the attempts made.
        """
        message = run_log.shown(outcome.error_message or "")
        events = run_log.take()
        try:
            verdict = self.store.queue.retry_later(
                execution, self.id, message, self.settings.retry_policy, events
            )
        except Exception:
            # Ended in ERROR below, as without retries: a failed run is never left RUNNING.
            log.exception("execution %d: could not schedule its retry", execution.id)
            run_log.give_back(events)
            return outcome
        if verdict is None:
            log.warning("execution %d was no longer ours to retry", execution.id)
            return None
        if verdict.retry:
            log.info("execution %d retried: %s", execution.id, message)
            return None
        run_log.give_back(events)
        return dataclasses.replace(outcome, error_message=verdict.message)


def _success(result: RunResult, staging_dir: str) -> Outcome:
    return Outcome(
        status=result.status,
        success_count=result.success_count,
        failure_count=result.failure_count,
        counters=result.counters,
        sheets=result.sheets,
        staging_dir=staging_dir,
        moves=result.moves,
        bytes_read=result.counters.get("IMPORT_BYTES", 0),
    )
