"""streamkit on a local Ray instance: the Ray Data block, the executor, ``batch --ray``.

Marked ``ray`` (needs the extra; CI runs ``pytest -m ray``). One local Ray
(``ray.init(num_cpus=2)``) serves the module; the CLI runs join it by its
address, and emulator hosts run in their own processes. Ray's driver keeps
threads and gRPC sockets of its own for the life of the instance, so these
tests skip the leak check (streamkit starts no thread in the driver here:
the Dispatchers live in the actors).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

import pytest
import requests

ray = pytest.importorskip("ray")

from streamkit import GenerateRequest, Result  # noqa: E402
from streamkit._raywork import ActorBody, Packed  # noqa: E402
from streamkit.emulator import expected  # noqa: E402
from streamkit.ray import RayExecutor, map_requests  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.allow_leaks, pytest.mark.timeout(240)]

TOKENS = 8                 # num_predict of every prompt
TPS = 200                  # emulator pacing: a request takes TOKENS / TPS s
RUN_TIMEOUT_S = 180.0
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "prompts.jsonl")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance for the module; yields its address (for CLI runs to join)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


class _EmulatorProcess:
    def __init__(self, parallel: int = 16) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "emulate", "--port", "0", "--parallel",
             str(parallel), "--tokens-per-second", str(TPS)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def counters(self) -> Dict[str, Any]:
        reply = requests.get(self.url + "/_emulator/counters", timeout=10)
        return reply.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def hosts() -> Iterator[List[_EmulatorProcess]]:
    """Four emulators with 16 slots each: a client over its limit of 4 would show in the peak."""
    emulators = [_EmulatorProcess() for _ in range(4)]
    try:
        yield emulators
    finally:
        for emulator in emulators:
            emulator.close()


@pytest.fixture
def fresh(hosts: List[_EmulatorProcess]) -> List[_EmulatorProcess]:
    for emulator in hosts:
        requests.post(emulator.url + "/_emulator/reset", timeout=10)
    return hosts


def _prompts(path: str, n: int) -> Dict[str, str]:
    prompts = {f"p{i}": f"prompt number {i}" for i in range(n)}
    with open(path, "w", encoding="utf-8") as f:
        for key, prompt in prompts.items():
            f.write(json.dumps({"id": key, "prompt": prompt}) + "\n")
    return prompts


def _text(prompt: str) -> str:
    return expected("demo", {"prompt": prompt, "options": {"num_predict": TOKENS}}).text


def _batch(prompts: str, out: str, hosts: Sequence[_EmulatorProcess], *extra: str) -> List[str]:
    command = [sys.executable, "-m", "streamkit", "batch", prompts, "-o", out, "-m", "demo",
               "--option", f"num_predict={TOKENS}", "-q"]
    for emulator in hosts:
        command += ["--host", f"{emulator.url}=4"]
    return command + list(extra)


def _records(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for_lines(path: str, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _lines(path) < n:
        assert proc.poll() is None, "the run ended before the fault"
        assert time.monotonic() < deadline, f"{path} never reached {n} lines"
        time.sleep(0.05)  # polling a file another process writes, with a deadline


def _actor_pids() -> List[int]:
    """Processes whose title Ray set to an ActorBody actor (of any job on this machine)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"ray::ActorBody"):
            pids.append(int(entry))
    return pids


def _wait_for_actors_to_go(before: Set[int], timeout: float = 30.0) -> None:
    """Wait until no ActorBody process is left but those in ``before``."""
    deadline = time.monotonic() + timeout
    while set(_actor_pids()) - before:   # Ray stops actors asynchronously
        assert time.monotonic() < deadline, "the run's actors outlived it"
        time.sleep(0.1)  # polling process titles, with a deadline


def _finish(proc: subprocess.Popen[bytes]) -> str:
    _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    return err.decode("utf-8", "replace")


def _check_output(out: str, prompts: Dict[str, str]) -> None:
    records = _records(out)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "an id was written twice"
    assert set(ids) == set(prompts)
    assert all(r["response"] == _text(prompts[r["id"]]) for r in records)


# --- the Ray Data building block ---------------------------------------------------


def test_dataset_rows_in_rows_out(cluster: str, fresh: List[_EmulatorProcess]) -> None:
    rows: List[Dict[str, Any]] = [{"id": f"r{i}", "prompt": f"row {i}", "tag": i}
                                  for i in range(12)]
    rows.append({"id": "bad", "prompt": "   ", "tag": 99})
    dataset = ray.data.from_items(rows)
    answered = map_requests(dataset, [(fresh[0].url, 2)], concurrency=1, batch_size=5,
                            num_cpus=0.5, model="demo",
                            options={"num_predict": TOKENS}).take_all()
    by_id = {row["id"]: row for row in answered}
    assert set(by_id) == {row["id"] for row in rows}
    for i in range(12):
        row = by_id[f"r{i}"]
        assert row["tag"] == i and row["error"] is None and row["attempts"] == 1
        want = expected("demo", {"prompt": f"row {i}", "options": {"num_predict": TOKENS}})
        assert row["response"] == want.text and row["done_reason"] == want.done_reason
        assert row["eval_count"] == TOKENS and row["host"] == fresh[0].url
        assert row["total_ms"] >= row["ttft_ms"] > 0
    assert by_id["bad"]["error"] == 'ConfigError: "prompt" is empty'
    assert fresh[0].counters()["peak_in_flight"] <= 2


# --- the executor --------------------------------------------------------------------


class _TwiceBody(ActorBody):
    """Answers every request twice, as a call Ray reran after a lost reply would."""

    def run(self, requests: Sequence[Any], epoch: int = 0) -> List[Packed]:
        once = super().run(requests, epoch)
        return once + once


def test_executor_yields_an_id_answered_twice_once(cluster: str,
                                                   fresh: List[_EmulatorProcess]) -> None:
    # The test module is not importable in Ray's workers: ship the class by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayExecutor(hosts=[(fresh[0].url, 4)], workers=4, actors=2, num_cpus=0.5,
                     body=_TwiceBody) as executor:
        requests_ = (GenerateRequest("demo", f"twice {i}", id=f"t{i}",
                                     options={"num_predict": TOKENS}) for i in range(40))
        results = list(executor.map(requests_))
    assert sorted(r.id or "" for r in results) == sorted(f"t{i}" for i in range(40))
    assert all(r.text == _text("twice " + (r.id or "")[1:]) for r in results)
    assert executor.duplicates == 40


class _DictCache:
    """A ResponseCache in a dict, keyed by prompt (the driver is its only user)."""

    def __init__(self) -> None:
        self.results: Dict[str, Result] = {}

    def get(self, request: Any) -> Optional[Result]:
        return self.results.get(request.prompt)

    def put(self, request: Any, result: Result) -> None:
        self.results[request.prompt] = result


def test_executor_ordered_with_a_driver_side_cache(cluster: str,
                                                   fresh: List[_EmulatorProcess]) -> None:
    cache = _DictCache()

    def run() -> List[Result]:
        with RayExecutor(hosts=[(fresh[0].url, 4)], workers=4, actors=2, num_cpus=0.5,
                         cache=cache) as executor:
            requests_ = (GenerateRequest("demo", f"cached {i}", options={"num_predict": TOKENS})
                         for i in range(30))
            return list(executor.map(requests_, ordered=True))

    first = run()
    assert [r.id for r in first] == [str(i) for i in range(30)]   # input index as the id
    assert not any(r.cached for r in first) and len(cache.results) == 30
    served = fresh[0].counters()["completed"]
    second = run()
    assert [r.id for r in second] == [str(i) for i in range(30)]
    assert all(r.cached for r in second)
    assert [r.text for r in second] == [_text(f"cached {i}") for i in range(30)]
    assert fresh[0].counters()["completed"] == served   # nothing reached the server


# --- streamkit batch --ray (a driver process joining the module's Ray) ----------------


def test_2000_prompts_4_hosts_2_actors_every_id_once_within_host_limits(
        cluster: str, fresh: List[_EmulatorProcess], tmp_path: Any) -> None:
    prompts = _prompts(str(tmp_path / "p.jsonl"), 2000)
    out = str(tmp_path / "out.jsonl")
    proc = subprocess.run(_batch(str(tmp_path / "p.jsonl"), out, fresh,
                                 f"--ray={cluster}", "--ray-actors", "2",
                                 # more workers than slots: only the hosts' shares limit
                                 "--workers", "32"),
                          capture_output=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr.decode()
    _check_output(out, prompts)
    peaks = [emulator.counters()["peak_in_flight"] for emulator in fresh]
    assert max(peaks) <= 4, peaks
    assert min(peaks) >= 2, peaks   # the slots were used, not just respected
    assert sum(emulator.counters()["completed"] for emulator in fresh) == 2000


def test_actor_killed_mid_run_changes_nothing_in_the_output(
        cluster: str, fresh: List[_EmulatorProcess], tmp_path: Any) -> None:
    prompts = _prompts(str(tmp_path / "p.jsonl"), 800)
    out = str(tmp_path / "out.jsonl")
    before = set(_actor_pids())
    proc = subprocess.Popen(_batch(str(tmp_path / "p.jsonl"), out, fresh, f"--ray={cluster}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out, 200, proc)
        victims = sorted(set(_actor_pids()) - before)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)
        err = _finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    _check_output(out, prompts)
    assert _lines(str(tmp_path / "out.errors.jsonl")) == 0


def test_resume_after_sigkill_of_the_driver_writes_nothing_twice(
        cluster: str, fresh: List[_EmulatorProcess], tmp_path: Any) -> None:
    prompts = _prompts(str(tmp_path / "p.jsonl"), 800)
    out = str(tmp_path / "out.jsonl")
    command = _batch(str(tmp_path / "p.jsonl"), out, fresh, f"--ray={cluster}")
    before = set(_actor_pids())
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out, 300, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        proc.kill()
    _wait_for_actors_to_go(before)   # Ray stops a job's actors with their driver
    first = _lines(out)
    assert 300 <= first < 800
    rerun = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert f"{800 - first} ok" in rerun.stderr.decode() or _lines(out) == 800
    _check_output(out, prompts)


def test_ctrl_c_cancels_stops_the_actors_and_exits_130(
        cluster: str, fresh: List[_EmulatorProcess], tmp_path: Any) -> None:
    prompts = _prompts(str(tmp_path / "p.jsonl"), 800)
    out = str(tmp_path / "out.jsonl")
    before = set(_actor_pids())
    command = _batch(str(tmp_path / "p.jsonl"), out, fresh, f"--ray={cluster}")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out, 100, proc)
        proc.send_signal(signal.SIGINT)
        err = _finish(proc)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "resume with:" in err and "--ray " in err
    _wait_for_actors_to_go(before)
    assert all(e.counters()["in_flight"] == 0 for e in fresh)
    rerun = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT_S)
    assert rerun.returncode == 0, rerun.stderr.decode()
    _check_output(out, prompts)


def test_builtin_host_with_ray_gives_the_same_ids_and_texts(tmp_path: Any) -> None:
    # No --ray address: the run starts (and stops) its own local Ray instance.
    def run(extra: Optional[str]) -> Dict[str, str]:
        out = str(tmp_path / f"out-{extra or 'plain'}.jsonl")
        command = [sys.executable, "-m", "streamkit", "batch", EXAMPLES, "-o", out,
                   "--host", "builtin", "-q"] + ([extra] if extra else [])
        proc = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr.decode()
        return {r["id"]: r["response"] for r in _records(out)}

    assert run("--ray") == run(None)
