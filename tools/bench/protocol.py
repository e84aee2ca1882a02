#!/usr/bin/env python3
"""The benchmark protocol (BENCHMARKS.md, "Protocol"), shared by every script under tools/bench that times engines.

One run does ROUNDS rounds (default 5; fewer is marked "not for publication"); each round runs every engine once, in
the order given (A B A B …), each as a fresh process that does its own warm-up and prints one JSON sample. Every
figure is reported for every engine as the median (min–max) over the rounds: the same statistic for all, the median
of an even count being the mean of the middle two (as `moepress bench` computes its own). The table is headed by the
command that made it and by the machine line (`moepress bench --machine-only`: CPU model and flags, MoEPress's
kernel ISA, read bandwidth as measured, date, commit).

  protocol.py rounds --command CMDLINE [--rounds N] [--note TEXT] [--ratio] --metric KEY:HEADER[:DIGITS[:ratio]] ...
                     --engine LABEL SHELL_CMD [--engine LABEL SHELL_CMD ...]
      SHELL_CMD (run with bash) prints one JSON object, or several JSON lines: the last object is the sample;
      KEY is read from it (an engine without KEY gets "—"). --ratio adds a row per engine: first engine / it, of the
      medians, for the metrics marked ratio (rates, where higher is better).
  protocol.py llama-bench GGUF --tokens T --decode D [--threads N] [extra llama-bench args]
      One llama.cpp sample as `moepress bench` measures itself: prefill of T tokens from an empty context, then
      D generated tokens from a context of T tokens (-d T), one repetition each (-r 1) after llama-bench's own
      warm-up, read from the per-repetition samples (samples_ns), not avg_ts.
  protocol.py machine [--threads N]
      The machine line alone.
  protocol.py commit
      The commit the machine line names (MOEPRESS_COMMIT, else git describe --dirty of this tree).
Scripts whose steps depend on each other (outofcore.sh) import summary, fmt, header and machine_line instead.
Env: MOEPRESS (the moepress binary; default .build/release/moepress), MOEPRESS_COMMIT (default: git describe of HEAD,
"-dirty" when the tree has changes). Peers run as their users run them: ONEDNN_MAX_CPU_ISA and DNNL_MAX_CPU_ISA are
removed from every engine's environment.
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIN_PUBLISHED_ROUNDS = 5
HANDICAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def summary(samples):
    """(median, min, max) of a non-empty list of numbers."""
    if not samples:
        raise ValueError("no samples")
    return statistics.median(samples), min(samples), max(samples)


def alternate(rounds, engines, run):
    """run(round, engine) for every engine once per round, in order; returns each engine's samples in round order."""
    samples = {e: [] for e in engines}
    for r in range(rounds):
        for e in engines:
            samples[e].append(run(r, e))
    return samples


def commit():
    if os.environ.get("MOEPRESS_COMMIT"):
        return os.environ["MOEPRESS_COMMIT"]
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=10"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def engine_env():
    env = dict(os.environ, MOEPRESS_COMMIT=commit())
    for k in HANDICAPS:
        env.pop(k, None)
    return env


def machine_line(threads):
    binary = os.environ.get("MOEPRESS", os.path.join(ROOT, ".build", "release", "moepress"))
    return subprocess.run([binary, "bench", "--machine-only", "--threads", str(threads)], env=engine_env(),
                          capture_output=True, text=True, check=True).stdout.strip()


def last_json(text):
    """The last JSON object among the lines of text (or the whole text, if it is one object)."""
    try:
        v = json.loads(text)
        if isinstance(v, dict):
            return v
    except ValueError:
        pass
    objs = [json.loads(l) for l in text.splitlines() if l.strip().startswith("{")]
    if not objs:
        raise ValueError(f"no JSON object in: {text[-500:]!r}")
    return objs[-1]


def fmt(stats, digits):
    m, lo, hi = stats
    return f"{m:.{digits}f}" if lo == hi else f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def header(command, machine, rounds, what):
    """The lines above every table: the command that made it, the machine line, what was measured."""
    out = [f"Command: `{command}`", "", machine, "", f"Median (min–max) of {rounds} rounds{what}"]
    if rounds < MIN_PUBLISHED_ROUNDS:
        out.append(f"**{rounds} rounds: fewer than the protocol's {MIN_PUBLISHED_ROUNDS}, not for publication.**")
    return out


def table(command, machine, rounds, note, metrics, labels, samples, ratio, row_header="engine"):
    """The Markdown block: header, then one row per engine."""
    out = header(command, machine, rounds, ", each running every engine once in this order (A B A B …), each engine a fresh "
                 "process after its own warm-up." + (f" {note}" if note else ""))
    out += ["", f"| {row_header} | " + " | ".join(h for _, h, _, _ in metrics) + " |", "|---|" + "---:|" * len(metrics)]
    stats = {}
    for label in labels:
        cells = []
        for key, _, digits, _ in metrics:
            vals = [s[key] for s in samples[label] if s.get(key) is not None]
            stats[label, key] = summary(vals)[0] if len(vals) == len(samples[label]) and vals else None
            cells.append(fmt(summary(vals), digits) if stats[label, key] is not None else "—")
        version = samples[label][0].get("engine")
        name = label if not version or version.lower() == label.lower() else version if version.lower().startswith(label.lower()) else f"{label} ({version})"
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if ratio:
        first = labels[0]
        for label in labels[1:]:
            cells = []
            for key, _, _, wanted in metrics:
                a, b = stats[first, key], stats[label, key]
                cells.append(f"**{a / b:.2f}×**" if wanted and a and b else "")
            out.append(f"| **{first} / {label}** (medians) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def cmd_rounds(a):
    if a.rounds < 1:
        sys.exit("protocol.py: --rounds must be at least 1 (published figures need at least 5)")
    metrics = []
    for m in a.metric:
        parts = m.split(":")
        metrics.append((parts[0], parts[1] if len(parts) > 1 else parts[0], int(parts[2]) if len(parts) > 2 else 1,
                        len(parts) > 3 and parts[3] == "ratio"))
    labels = [l for l, _ in a.engine]
    commands = dict(a.engine)
    if len(set(labels)) != len(labels):
        sys.exit("protocol.py: engine labels must differ")
    machine = machine_line(a.threads)
    env = engine_env()

    def run(r, label):
        print(f"protocol: round {r + 1}/{a.rounds}: {label}", file=sys.stderr, flush=True)
        p = subprocess.run(["bash", "-c", commands[label]], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"protocol.py: {label} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        return last_json(p.stdout)

    samples = alternate(a.rounds, labels, run)
    print(table(a.command, machine, a.rounds, a.note, metrics, labels, samples, a.ratio, a.row_header))
    if a.samples:
        json.dump({"command": a.command, "machine": machine, "rounds": a.rounds, "samples": samples}, open(a.samples, "w"), indent=1)


def cmd_llama_bench(a, extra):
    script = os.path.join(HERE, "llamacpp.sh")

    def one(args):
        p = subprocess.run([script, "bench", a.gguf, "-t", str(a.threads), "-r", "1", "-o", "json", *args, *extra],
                           env=engine_env(), capture_output=True, text=True, check=True)
        (t,) = json.loads(p.stdout)
        (ns,) = t["samples_ns"]
        return t, (int(t["n_prompt"]) + int(t["n_gen"])) * 1e9 / int(ns)

    pp, prefill = one(["-p", str(a.tokens), "-n", "0", "-d", "0"])
    tg, decode = one(["-p", "0", "-n", str(a.decode), "-d", str(a.tokens)])
    print(json.dumps({"engine": f"llama.cpp {pp['build_commit']} {pp['model_type'].split()[-1]}", "threads": a.threads,
                      "prompt_tokens": a.tokens, "decode_tokens": a.decode, "decode_depth": int(tg["n_depth"]),
                      "prefill_tokens_per_second": prefill, "decode_tokens_per_second": decode}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rounds")
    r.add_argument("--command", required=True, help="the command line that makes the table (printed above it)")
    r.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", MIN_PUBLISHED_ROUNDS)))
    r.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)), help="for the bandwidth of the machine line")
    r.add_argument("--note", default="", help="what was measured: prompt, decode length, context, threads, dtype")
    r.add_argument("--metric", action="append", required=True, metavar="KEY:HEADER[:DIGITS[:ratio]]")
    r.add_argument("--engine", action="append", nargs=2, required=True, metavar=("LABEL", "SHELL_CMD"))
    r.add_argument("--ratio", action="store_true", help="add first-engine / engine ratio rows (of the medians)")
    r.add_argument("--samples", help="also write every sample to this JSON file")
    r.add_argument("--row-header", default="engine", help="the first column's heading (what the engines are)")
    lb = sub.add_parser("llama-bench")
    lb.add_argument("gguf")
    lb.add_argument("--tokens", type=int, required=True)
    lb.add_argument("--decode", type=int, required=True)
    lb.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    m = sub.add_parser("machine")
    m.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    sub.add_parser("commit")
    a, extra = ap.parse_known_args()
    if a.cmd == "rounds":
        if extra:
            ap.error(f"unknown arguments {extra}")
        cmd_rounds(a)
    elif a.cmd == "llama-bench":
        cmd_llama_bench(a, extra)
    elif a.cmd == "commit":
        print(commit())
    else:
        print(machine_line(a.threads))


if __name__ == "__main__":
    main()
