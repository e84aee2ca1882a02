#!/usr/bin/env python3
"""Added tokens with every flag (lstrip, rstrip, single_word, normalized, special or not), added by HF
`tokenizers` itself to two real tokenizers (Metaspace and byte-level), with the ids HF gives on texts that
exercise each flag. Writes Tests/MoETokenizerTests/Fixtures/added_tokens/. Run from the repository root."""
import json, os
from tokenizers import Tokenizer, AddedToken, normalizers

SHARED = os.environ.get("MOEPRESS_SHARED", os.path.join("..", "shared"))
OUT = os.path.join("Tests", "MoETokenizerTests", "Fixtures", "added_tokens")
TEXTS = [
    "a <tool>  call <tool>x", "  <tool>", "hello world, sayhello and hello!", "Hello HELLO hello_there hello",
    "WORLD world World WORLDS", "[sep]x [sep] y[sep]", "mixed <tool>hello<tool> WORLD[sep]", "",
]
os.makedirs(OUT, exist_ok=True)
cases = {}
for name, rel, lowercase in [("metaspace", "models/mixtral-ref/tokenizer.json", True), ("bytelevel", "models/qwen-moe-ref/tokenizer.json", False)]:
    tok = Tokenizer.from_file(os.path.join(SHARED, rel))
    if lowercase:
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase()])
    tok.add_special_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False, special=True)])
    tok.add_tokens([
        AddedToken("hello", single_word=True, normalized=True),
        AddedToken("WORLD", normalized=False),
        AddedToken("[sep]", lstrip=False, rstrip=True, normalized=True),
    ])
    tok.save(os.path.join(OUT, f"{name}.json"))
    cases[name] = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids,
                    "decoded": tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=True)} for t in TEXTS]
json.dump(cases, open(os.path.join(OUT, "expected.json"), "w"), indent=1)
print("wrote", OUT)
