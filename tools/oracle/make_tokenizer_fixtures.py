#!/usr/bin/env python3
"""Expected token ids from HF `tokenizers` for Tests/MoETokenizerTests/Fixtures/tokenizers.json.

For the four tokenizers under ../shared (two reference models, Mixtral-8x7B, Tekken) and every file of
../shared/data/dev: the whole file encoded at once, and line by line (lines split on "\\n"); stored as the
token count and FNV-1a-64 hashes (whole file; blocks of 200 lines) so the fixture stays small. Plus an
adversarial set stored in full: ids without and with special tokens, and both decodes.
Run from the repository root: python3 tools/oracle/make_tokenizer_fixtures.py"""
import json, os, sys
import tokenizers
from tokenizers import Tokenizer

SHARED = os.environ.get("MOEPRESS_SHARED", os.path.join("..", "shared"))
TOKENIZERS = {
    "mixtral-ref": "models/mixtral-ref/tokenizer.json",
    "qwen-moe-ref": "models/qwen-moe-ref/tokenizer.json",
    "mixtral-8x7b": "tokenizers/mixtral-8x7b/tokenizer.json",
    "tekken-240911": "tokenizers/tekken-240911/tokenizer.json",
}
BLOCK = 200
FNV_OFFSET, FNV_PRIME, MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv(ids, h=FNV_OFFSET):
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * FNV_PRIME) & MASK
    return h


SEP = 0xFFFFFFFF

ADVERSARIAL = [
    "", " ", "  ", "    ", "\t", "\t\t x", "\n", "\r\n", "a\r\nb\r\n", "line one\nline two\n\n\nthree",
    "Hello world", " Hello world", "Hello  world   end  ", "trailing space ", "  leading", "a\u00a0b\u2003c\u3000d",
    "emoji 😀 and 👩‍👩‍👧 family and 🇫🇷 flag", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛", "combining e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937",
    "Ünïcödé Ελληνικά русский 中文字符 日本語のテキスト 한국어", "\u200b\u200c\u200d zero width \ufeff",
    "invalid-looking \\xff\\xfe bytes \\u0000 and \u00ff\u00fe\u00fd", "\x00\x01\x02 control \x7f \x1b[31m",
    "don't won't it's I'm you're we've they'll he'd DON'T IT'S", "1234567890 3.14159 1,000,000 2024-11-22 0x1F",
    "x" * 300, "supercalifragilisticexpialidocious" * 8, "a" * 1000 + "b",
    "https://example.com/path?q=1&r=2#frag user@example.org", "def f(x):\n    return x ** 2  # comment\n",
    "¿Qué? ¡Sí! «quotes» “curly” ‘single’ — dash – en … ellipsis", "tab\tseparated\tvalues\t",
    "<s>", "</s>", "<unk>", "<|endoftext|>", "text<s>inside</s>text", " <s> spaced </s> ", "<s><s></s>",
    "a<|endoftext|>b <|endoftext|> c<|endoftext|>", "<SPECIAL_999>x<SPECIAL_10><s>", "<0x41> <0xFF> literal byte tokens",
    "▁ already ▁▁ metaspace ▁", "Ġ already Ġ byte level Ċ", "   \n  \n\t \n",
]


def main():
    print("tokenizers", tokenizers.__version__, file=sys.stderr)
    dev = os.path.join(SHARED, "data", "dev")
    files = sorted(f for f in os.listdir(dev) if f.endswith(".txt"))
    out = {"tokenizers_version": tokenizers.__version__, "block_lines": BLOCK, "tokenizers": {}}
    for name, rel in TOKENIZERS.items():
        tok = Tokenizer.from_file(os.path.join(SHARED, rel))
        entry = {"path": rel, "files": {}, "adversarial": []}
        for f in files:
            text = open(os.path.join(dev, f), encoding="utf-8").read()
            whole = tok.encode(text, add_special_tokens=False).ids
            lines = text.split("\n")
            blocks, n_lines_tokens = [], 0
            for b in range(0, len(lines), BLOCK):
                h = FNV_OFFSET
                for line in lines[b:b + BLOCK]:
                    ids = tok.encode(line, add_special_tokens=False).ids
                    n_lines_tokens += len(ids)
                    h = fnv(ids + [SEP], h)
                blocks.append(f"{h:016x}")
            entry["files"][f] = {"bytes": len(text.encode()), "tokens": len(whole), "hash": f"{fnv(whole):016x}",
                                 "lines": len(lines), "line_tokens": n_lines_tokens, "line_blocks": blocks}
        for s in ADVERSARIAL:
            ids = tok.encode(s, add_special_tokens=False).ids
            special = tok.encode(s, add_special_tokens=True).ids
            entry["adversarial"].append({"text": s, "ids": ids, "ids_special": special,
                                         "decoded": tok.decode(ids, skip_special_tokens=False),
                                         "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
        out["tokenizers"][name] = entry
        print(name, sum(v["tokens"] for v in entry["files"].values()), "tokens", file=sys.stderr)
    path = os.path.join("Tests", "MoETokenizerTests", "Fixtures", "tokenizers.json")
    json.dump(out, open(path, "w", encoding="utf-8"), ensure_ascii=True, indent=1)
    print("wrote", path, os.path.getsize(path), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
