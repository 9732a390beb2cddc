#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/: small valid inputs
(and a few near misses) from which libFuzzer mutates. Deterministic; run it again after a
format changes:  python3 fuzz/make_corpus.py"""
import json
import pathlib
import random
import struct

root = pathlib.Path(__file__).resolve().parent / "corpus"
rng = random.Random(1005)


def put(target, name, data):
    d = root / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def floats(n, fmt="f"):
    return b"".join(struct.pack("<" + fmt, rng.uniform(-0.1, 0.1)) for _ in range(n))


def bf16(n):
    return b"".join(struct.pack("<f", rng.uniform(-0.1, 0.1))[2:] for _ in range(n))


def safetensors(tensors, metadata=None):
    """tensors: (name, dtype, shape, payload bytes) in data order."""
    header, offset = {}, 0
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


# ---- safetensors: a few dtypes, and a whole GPT-2 (d_model 64, the inferred head size) in F16
put("fuzz_safetensors", "small", safetensors([
    ("a", "F32", [2, 3], floats(6)), ("b", "BF16", [4], bf16(4)), ("c", "I64", [2], struct.pack("<2q", 1, -2)),
    ("d", "U8", [0], b"")], {"format": "pt"}))
put("fuzz_safetensors", "empty", safetensors([]))
V, T, C, F = 8, 4, 64, 256
gpt2 = [("wte.weight", [V, C]), ("wpe.weight", [T, C])]
for name, shape in [("ln_1.weight", [C]), ("ln_1.bias", [C]), ("attn.c_attn.weight", [C, 3 * C]),
                    ("attn.c_attn.bias", [3 * C]), ("attn.c_proj.weight", [C, C]), ("attn.c_proj.bias", [C]),
                    ("ln_2.weight", [C]), ("ln_2.bias", [C]), ("mlp.c_fc.weight", [C, F]), ("mlp.c_fc.bias", [F]),
                    ("mlp.c_proj.weight", [F, C]), ("mlp.c_proj.bias", [C])]:
    gpt2.append(("h.0." + name, shape))
gpt2 += [("ln_f.weight", [C]), ("ln_f.bias", [C])]


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


put("fuzz_safetensors", "gpt2_f16", safetensors(
    [(n, "F16", s, floats(numel(s), "e")) for n, s in gpt2]))

# ---- token shards: llm.c's 1024-byte header (magic, version, count), a headerless file, a short one
def shard(tokens, magic=20240520, version=1, count=None):
    header = struct.pack("<3i", magic, version, len(tokens) if count is None else count) + b"\0" * (1024 - 12)
    return header + struct.pack(f"<{len(tokens)}H", *tokens)


put("fuzz_token_shard", "llmc", shard([rng.randrange(50257) for _ in range(24)]))
put("fuzz_token_shard", "llmc_eot", shard([50256] + [rng.randrange(300) for _ in range(9)]))
put("fuzz_token_shard", "raw", struct.pack("<12H", *[rng.randrange(50257) for _ in range(12)]))
put("fuzz_token_shard", "count_past_end", shard([1, 2, 3], count=4))

# ---- llm.c model files: version 3 (fp32) and 5 (bf16), maxT 4, V 8 (padded to 16), 1 layer, C 4
def llmc(version, maxT=4, V=8, L=1, NH=1, C=4, Vp=16):
    header = struct.pack("<8i", 20240326, version, maxT, V, L, NH, C, Vp) + b"\0" * (1024 - 32)
    n = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C
    return header + (floats(n) if version == 3 else bf16(n))


put("fuzz_llmc", "fp32", llmc(3))
put("fuzz_llmc", "bf16", llmc(5))
put("fuzz_llmc", "two_layers", llmc(3, L=2, NH=2))

# ---- GPT-2 tokenizer files: the 256 byte tokens in GPT-2's alphabet, <|endoftext|>, a few merges
def byte_alphabet():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


alphabet = byte_alphabet()
encoder = {alphabet[b]: b for b in range(256)}
merges = []
for left, right in [("t", "h"), ("th", "e"), ("Ġ", "the"), ("Ġ", "t"), ("e", "r"), ("Ġt", "h")]:
    merges.append(f"{left} {right}")
    encoder.setdefault(left + right, len(encoder))
# "Ġt h" makes "Ġth", a new token; the rest are made once as well.
encoder["<|endoftext|>"] = len(encoder)
put("fuzz_tokenizer_files", "small",
    json.dumps(encoder, ensure_ascii=False) + "\n=====\n#version: 0.2\n" + "\n".join(merges) + "\n")
put("fuzz_tokenizer_files", "no_merges",
    json.dumps({alphabet[b]: b for b in range(256)} | {"<|endoftext|>": 256, "x": 257}, ensure_ascii=False)
    + "\n=====\n#version: 0.2\n")

# ---- text for the real tokenizer
put("fuzz_tokenizer_encode", "english", "The Fulton County Grand Jury said Friday an investigation of "
    "Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.\n")
put("fuzz_tokenizer_encode", "unicode", "naïve café — 東京 🌲 bonsai's 1,234.5  \t\n<|endoftext|>x")
put("fuzz_tokenizer_encode", "invalid_utf8", b"ab\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x8c'll 's")

# ---- flags (first byte picks the parser: 0 --grow, 1 --sat-ladder, 2 enumerations, 3 JSON)
put("fuzz_flags", "grow_net2net", b"\x00" + b"100:net2net:d=64,heads=4,layers=3")
put("fuzz_flags", "grow_stages", b"\x00" + b"10:lemon:d=48,heads=3;20:stackbert:layers=4;30:upcycle:experts=4,top_k=2")
put("fuzz_flags", "grow_ligo", b"\x00" + b"5:ligo:d=64,heads=4,ffn=256,layers=4,steps=10,lr=1e-3")
put("fuzz_flags", "grow_mango", b"\x00" + b"5:mango:d=64,heads=4,ffn=256,layers=4,rank=2")
put("fuzz_flags", "grow_huge_heads", b"\x00" + b"5:ligo:d=64,heads=1110000004,ffn=256,layers=8")  # once out of memory
put("fuzz_flags", "ladder", b"\x01" + b"800,1000,4")
put("fuzz_flags", "ladder_many_stairs", b"\x01" + b"8,22,2222222224")  # once a hang: rate() looped over K
put("fuzz_flags", "enum", b"\x02" + b"rewarm:10")
put("fuzz_flags", "hf_config", b"\x03" + json.dumps(
    {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
     "n_head": 12, "n_inner": None, "activation_function": "gelu_new"}).encode())
put("fuzz_flags", "loader_state", b"\x03" + json.dumps(
    {"epoch": 0, "shard": 1, "window": 7, "seed": 1005, "shuffle": True, "batch_size": 4,
     "seq_len": 64, "world": 1, "num_shards": 2}).encode())
