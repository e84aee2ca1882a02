#!/usr/bin/env python3
"""HF transformers (f32, CPU) computing MoEPress's evaluation protocols, for fixtures and for speed.

- Perplexity: each file tokenized whole, no special tokens, consecutive windows of --seq-len (a last
  window of ≥ 2 tokens kept), each window scored alone, NLL averaged over predicted tokens.
- Multiple choice: context and choice encoded separately without special tokens; a choice's score is the
  sum of its tokens' log-probabilities; computed as lm-eval does, one forward of context + choice per choice.

Writes Tests/MoEEvalTests/Fixtures/eval_oracle.json (per-item scores of the first --per-task items of each
task in tasks/dev.jsonl, perplexity of --ppl-files) and, with --time, prints HF's throughput.
Run from the repository root: python3 tools/oracle/eval_oracle.py [--time]"""
import argparse, json, math, os, time
import torch
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer

SHARED = os.environ.get("MOEPRESS_SHARED", os.path.join("..", "shared"))


def load(name):
    d = os.path.join(SHARED, "models", name)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    return model, Tokenizer.from_file(os.path.join(d, "tokenizer.json"))


@torch.inference_mode()
def perplexity(model, tok, path, seq_len=256):
    ids = tok.encode(open(path, encoding="utf-8").read(), add_special_tokens=False).ids
    nll, n = 0.0, 0
    for i in range(0, len(ids), seq_len):
        w = ids[i:i + seq_len]
        if len(w) < 2:
            continue
        logits = model(torch.tensor([w])).logits[0].double()
        lp = torch.log_softmax(logits[:-1], -1)
        nll -= lp.gather(1, torch.tensor(w[1:])[:, None]).sum().item()
        n += len(w) - 1
    return {"nll": nll / n, "perplexity": math.exp(nll / n), "tokens": n}


@torch.inference_mode()
def choice_scores(model, tok, item):
    ctx = tok.encode(item["context"], add_special_tokens=False).ids
    out = []
    for c in item["choices"]:
        cont = tok.encode(c, add_special_tokens=False).ids
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
        lp = torch.log_softmax(logits[len(ctx) - 1:-1], -1)
        out.append(lp.gather(1, torch.tensor(cont)[:, None]).sum().item())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-task", type=int, default=10)
    ap.add_argument("--ppl-files", default="handbook.txt,jargon.txt")
    ap.add_argument("--time", action="store_true", help="also time HF on all of tasks/dev.jsonl and the ppl files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-items", type=int, default=0, help="with --time: time only the first N task items (0: all)")
    ap.add_argument("--no-fixture", action="store_true", help="do not write the fixture")
    ap.add_argument("--model", choices=["mixtral-ref", "qwen-moe-ref"], help="only this model (with --no-fixture)")
    a = ap.parse_args()
    if a.model and not a.no_fixture:
        ap.error("--model writes no fixture: add --no-fixture")
    torch.set_num_threads(a.threads)
    items = [json.loads(l) for l in open(os.path.join(SHARED, "data", "tasks", "dev.jsonl"))]
    seen, subset = {}, []
    for it in items:
        if seen.get(it["task"], 0) < a.per_task:
            subset.append(it)
            seen[it["task"]] = seen.get(it["task"], 0) + 1
    fixture = {"per_task": a.per_task, "models": {}}
    for name in [a.model] if a.model else ["mixtral-ref", "qwen-moe-ref"]:
        model, tok = load(name)
        entry = {"items": [{"id": it["id"], "scores": choice_scores(model, tok, it)} for it in subset], "perplexity": {}}
        for f in a.ppl_files.split(","):
            entry["perplexity"][f] = perplexity(model, tok, os.path.join(SHARED, "data", "dev", f))
        fixture["models"][name] = entry
        if a.time:
            timed = items[:a.time_items] if a.time_items else items
            s = time.perf_counter()
            for it in timed:
                choice_scores(model, tok, it)
            t_tasks = time.perf_counter() - s
            s = time.perf_counter()
            n = sum(perplexity(model, tok, os.path.join(SHARED, "data", "dev", f))["tokens"] for f in a.ppl_files.split(","))
            t_ppl = time.perf_counter() - s
            print(json.dumps({"model": name, "engine": "HF transformers (eager, f32)", "threads": a.threads,
                              "task_items": len(timed), "task_items_per_second": len(timed) / t_tasks, "ppl_tokens_per_second": n / t_ppl}))
    if not a.no_fixture:
        path = os.path.join("Tests", "MoEEvalTests", "Fixtures", "eval_oracle.json")
        json.dump(fixture, open(path, "w"), indent=1)
        print("wrote", path)


if __name__ == "__main__":
    main()
