#!/usr/bin/env python3
"""Builds MoEPress's instruction set from Debian's `wordnet-base` (WordNet 3.0, Princeton's licence: use,
copy and distribution allowed with its notice, see data/instructions/README.md).

    apt-get install wordnet-base
    python3 tools/data/build_wordnet_instructions.py [WORDNET_DIR] [OUT_DIR]

Two kinds of question per synset whose first lemma is one plain word (3-12 lowercase letters) and whose
definition (the gloss before its first ';', examples dropped) has 3-14 words of ASCII:
  define:  "Define the word \"X\" (a noun|verb|adjective|adverb)."  ->  the definition
  name:    "Which word (a noun|...) means: <definition>?"            ->  X
Synsets go to the held-out split by a hash of their offset and part of speech (one synset never appears in both
splits, in either direction). Output: wordnet-train.jsonl and wordnet-heldout.jsonl, lines
{"instruction", "response", "kind"}, in a seeded order. Deterministic: the same WordNet gives the same bytes.
"""
import hashlib, json, os, random, re, sys

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet"
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "data", "instructions")
POS = {"noun": "a noun", "verb": "a verb", "adj": "an adjective", "adv": "an adverb"}
TRAIN_CAP, HELD_CAP = 12000, 800   # per kind

train, held = [], []
for pos, article in POS.items():
    with open(os.path.join(src, "data." + pos), encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):
                continue   # licence header
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, count = fields[0], int(fields[3], 16)
            word = fields[4]
            if not re.fullmatch(r"[a-z]{3,12}", word):
                continue
            definition = gloss.split(";")[0].strip()
            words = definition.split()
            if not (3 <= len(words) <= 14) or not definition.isascii() or '"' in definition:
                continue
            # The other lemmas of the synset are also right answers to "which word"; keep synsets with one lemma
            # so the reference is the answer.
            name_ok = count == 1
            h = int(hashlib.sha256(f"{pos}:{offset}".encode()).hexdigest()[:8], 16)
            split = held if h % 10 == 0 else train
            split.append({"instruction": f'Define the word "{word}" ({article}).', "response": definition, "kind": "define"})
            if name_ok:
                split.append({"instruction": f"Which word ({article}) means: {definition}?", "response": word, "kind": "name"})

def capped(items, cap, seed):
    rng = random.Random(seed)
    rng.shuffle(items)
    keep = []
    for kind in ("define", "name"):
        keep += [x for x in items if x["kind"] == kind][:cap]
    rng.shuffle(keep)
    return keep

os.makedirs(out, exist_ok=True)
for name, items, cap, seed in (("wordnet-train.jsonl", train, TRAIN_CAP, 1), ("wordnet-heldout.jsonl", held, HELD_CAP, 2)):
    items = capped(items, cap, seed)
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        for x in items:
            f.write(json.dumps(x, ensure_ascii=True, sort_keys=True) + "\n")
    print(f"{name}: {len(items)} items ({sum(x['kind'] == 'define' for x in items)} define, {sum(x['kind'] == 'name' for x in items)} name)")
