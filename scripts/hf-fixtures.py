#!/usr/bin/env python3
"""Builds the tiny Hugging Face reference models moe4j's HF tests compare against.

Run once where PyTorch, transformers and tokenizers are installed (no network needed):
    python3 scripts/hf-fixtures.py OUT_DIR [FAMILY ...]
It writes OUT_DIR/fixtures.tar.gz, holding one folder per model family
(config.json, safetensors, tokenizer.json, expected.safetensors with input ids, fp32 logits and greedy
continuations), the tokenizer reference ids (tokenizer-cases.json) and a DeepSeek-V3 MoE block case;
OUT_DIR/sources.tar.gz with the transformers modeling sources used (for reading conventions), and
OUT_DIR/log.txt (plus speed-config.json and speed.json: transformers' decoding speed on a mid-size Mixtral
shape, kept in bench/hf/). Every family is built in its own try block, so one failure does not lose the others.
"""
import io, json, os, sys, tarfile, time, traceback, inspect

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)
work = os.path.join(out_dir, "_work")
fix = os.path.join(work, "hf")
os.makedirs(fix, exist_ok=True)
log_lines = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    log_lines.append(s)


import torch
import transformers
from safetensors.torch import save_file

log("torch", torch.__version__, "transformers", transformers.__version__)
torch.set_num_threads(4)

TEXT = """The quick brown fox jumps over the lazy dog. Don't stop; we'll see what they've done.
Die Größe der Bäume überrascht Jürgen täglich — schön, nicht wahr? Straße, Äpfel, Öl.
机器学习模型使用专家混合架构。今天天气很好，我们去公园散步吧。
日本語のテキストも少し入れます。カタカナとひらがな、漢字。
Привет, как дела? Это тест токенизатора на русском языке.
مرحبا بالعالم، هذا اختبار بسيط.
Emoji: 😀🚀✨ and numbers 12345 67.89 3.14159, dates 2026-11-29.
def forward(self, x):\n\treturn self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU
    indented   spaces\tand\ttabs\r\nwindows line end
""" * 3

CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop; we'll see what they've done, I'm sure.",
    "Die Größe der Bäume überrascht Jürgen — schön!",
    "机器学习模型使用专家混合架构。",
    "日本語のテキストとカタカナ",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "Emoji 😀🚀✨ numbers 12345 3.14159",
    "def f(x):\n\treturn x * 2  # comment\n",
    "   leading spaces and trailing   ",
    "line one\r\nline two\n\n\nthree",
    "mixed: English, Deutsch, 中文, русский, العربية, 😀",
    "<|endoftext|>special in the middle<|im_start|>user",
    "a",
    "",
    "Ünïcödé ñoñó façade naïve café",
    "tabs\t\tand  double  spaces",
    "UPPER lower MiXeD 1,000,000",
    "never seen: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⚙️",
]

QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(style, vocab):
    from tokenizers import Tokenizer, Regex, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if style == "qwen":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return tok


def randomize(model, seed):
    """Larger-than-default random weights, so that every part (norm weights and biases included) matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def make_config(family, vocab):
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=None)
    if family == "mixtral":
        from transformers import MixtralConfig
        return mk(MixtralConfig, intermediate_size=24, num_local_experts=8, num_experts_per_tok=2,
                             sliding_window=6, rope_theta=1e6, **common)
    if family == "mixtral-bf16":
        from transformers import MixtralConfig
        return mk(MixtralConfig, intermediate_size=24, num_local_experts=8, num_experts_per_tok=2,
                             sliding_window=None, rope_theta=1e4, **common)
    if family == "qwen2_moe":
        from transformers import Qwen2MoeConfig
        return mk(Qwen2MoeConfig, intermediate_size=40, moe_intermediate_size=16, shared_expert_intermediate_size=20,
                              num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1,
                              mlp_only_layers=[1], use_sliding_window=False, rope_theta=1e6, **common)
    if family == "qwen3_moe":
        from transformers import Qwen3MoeConfig
        c = dict(common)
        c["tie_word_embeddings"] = True
        return mk(Qwen3MoeConfig, intermediate_size=40, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=3,
                              norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], head_dim=16,
                              use_sliding_window=False, rope_theta=1e6,
                              rope_scaling={"rope_type": "linear", "factor": 2.0}, **c)
    if family == "olmoe":
        from transformers import OlmoeConfig
        c = dict(common)
        c["num_key_value_heads"] = 4
        return mk(OlmoeConfig, intermediate_size=16, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                           rope_theta=1e4, **c)
    raise ValueError(family)


def mk(cls, **kw):
    """Older and newer transformers spell RoPE settings differently; try the plain keywords first."""
    try:
        return cls(**kw)
    except Exception as first:
        log(cls.__name__, "refused rope keywords, retrying with rope_parameters:", repr(first))
        params = {"rope_type": "default", "rope_theta": kw.pop("rope_theta", 10000.0)}
        params.update(kw.pop("rope_scaling", None) or {})
        return cls(rope_parameters=params, **kw)


def build_family(family, tok, style):
    from transformers import AutoModelForCausalLM
    vocab = tok.get_vocab_size()
    cfg = make_config(family, vocab)
    torch.manual_seed(1234)
    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    except TypeError:
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg)
    model = model.float().eval()
    randomize(model, 4321)
    d = os.path.join(fix, family)
    os.makedirs(d, exist_ok=True)
    bf16 = family.endswith("bf16")
    if bf16:
        # The reference computes in fp32 from the bf16-rounded weights. Casting the model itself to bf16 and
        # back would also round the RoPE inverse frequencies (a buffer), which no loaded model has: round
        # the parameters only, and save a bf16 copy.
        import copy
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(d, max_shard_size="60KB")
    else:
        model.save_pretrained(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (2, 16), generator=g)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    prompt = torch.tensor([tok.encode("Die Größe der Bäume. The quick brown").ids])
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True,
                             pad_token_id=0, eos_token_id=None)
    new = gen[0, prompt.shape[1]:].to(torch.int32)
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous(),
               "prompt_ids": prompt[0].to(torch.int32).contiguous(), "greedy_ids": new.contiguous()},
              os.path.join(d, "expected.safetensors"))
    files = sorted(os.listdir(d))
    log(family, "saved", files, "sizes", {f: os.path.getsize(os.path.join(d, f)) for f in files})
    from safetensors import safe_open
    for f in files:
        if f.endswith(".safetensors") and f != "expected.safetensors":
            with safe_open(os.path.join(d, f), "pt") as st:
                for k in st.keys():
                    log("   ", f, k, list(st.get_slice(k).get_shape()), st.get_slice(k).get_dtype())
    log(family, "config", open(os.path.join(d, "config.json")).read())
    log(family, "greedy", new.tolist(), "logits[0,0,:5]", logits[0, 0, :5].tolist())


def deepseek_block():
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as m
    cfg = DeepseekV3Config(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                           num_hidden_layers=1, n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
                           n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                           first_k_dense_replace=0, num_attention_heads=4, num_key_value_heads=4)
    torch.manual_seed(99)
    block = m.DeepseekV3MoE(cfg).float().eval()
    randomize(block, 99)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 24, 32, generator=g)
    with torch.no_grad():
        y = block(x)
    if isinstance(y, tuple):
        y = y[0]
    d = os.path.join(fix, "deepseek_v3_moe")
    os.makedirs(d, exist_ok=True)
    sd = {k: v.contiguous() for k, v in block.state_dict().items()}
    for k, v in sd.items():
        log("   deepseek", k, list(v.shape))
    save_file(sd, os.path.join(d, "block.safetensors"))
    save_file({"x": x[0].contiguous(), "y": y[0].float().contiguous()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(cfg.to_json_string())
    log("deepseek block done", y.shape)


def speed_reference():
    """Greedy-generation speed of a mid-size Mixtral-shaped model in transformers on this machine's CPU."""
    from transformers import MixtralConfig, AutoModelForCausalLM
    cfg = MixtralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=8, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2,
                        max_position_embeddings=512, tie_word_embeddings=False, sliding_window=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    with open(os.path.join(fix, "speed-config.json"), "w") as f:
        f.write(cfg.to_json_string())
    prompt = torch.randint(0, 32000, (1, 16))
    result = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0,
                           eos_token_id=None)
            dt = time.perf_counter() - t0
        result[f"threads_{threads}_tokens_per_s"] = 64 / dt
        log("speed", threads, "threads:", 64 / dt, "tokens/s")
    try:
        import platform
        result["cpu"] = platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0]
    except Exception as e:
        result["cpu"] = str(e)
    with open(os.path.join(fix, "speed.json"), "w") as f:
        json.dump(result, f, indent=1)
    torch.set_num_threads(4)


ONLY = sys.argv[2:]  # optional family names: rebuild just those (and the tokenizers they need)
toks = {}
try:
    toks["gpt2"] = train_tokenizer("gpt2", 400)
    toks["qwen"] = train_tokenizer("qwen", 400)
    cases = {}
    for style, tok in toks.items():
        path = os.path.join(fix, f"tokenizer-{style}.json")
        tok.save(path)
        cases[style] = [{"text": s, "ids": tok.encode(s).ids, "decoded": tok.decode(tok.encode(s).ids,
                         skip_special_tokens=False)} for s in CASES]
        log("tokenizer", style, "vocab", tok.get_vocab_size(), "first case", cases[style][1]["ids"])
    with open(os.path.join(fix, "tokenizer-cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
except Exception:
    log("TOKENIZER FAILED", traceback.format_exc())

for family, style in [("mixtral", "gpt2"), ("mixtral-bf16", "gpt2"), ("qwen2_moe", "qwen"), ("qwen3_moe", "qwen"),
                      ("olmoe", "gpt2")]:
    if ONLY and family not in ONLY:
        continue
    try:
        build_family(family, toks[style], style)
    except Exception:
        log("FAMILY FAILED", family, traceback.format_exc())
for step in (deepseek_block, speed_reference):
    if ONLY and step.__name__ not in ONLY:
        continue
    try:
        step()
    except Exception:
        log("STEP FAILED", step.__name__, traceback.format_exc())

with tarfile.open(os.path.join(out_dir, "fixtures.tar.gz"), "w:gz") as t:
    t.add(fix, arcname="hf")
try:
    if ONLY:
        raise SystemExit(0)
    import transformers.models.mixtral.modeling_mixtral as a
    import transformers.models.qwen2_moe.modeling_qwen2_moe as b
    import transformers.models.qwen3_moe.modeling_qwen3_moe as c
    import transformers.models.olmoe.modeling_olmoe as d
    import transformers.models.deepseek_v3.modeling_deepseek_v3 as e
    import transformers.modeling_rope_utils as r
    mods = [a, b, c, d, e, r]
    for extra in ("transformers.conversion_mapping", "transformers.integrations.moe", "transformers.masking_utils",
                  "transformers.models.mixtral.configuration_mixtral", "transformers.models.qwen2_moe.configuration_qwen2_moe",
                  "transformers.models.qwen3_moe.configuration_qwen3_moe", "transformers.models.olmoe.configuration_olmoe",
                  "transformers.core_model_loading"):
        try:
            import importlib
            mods.append(importlib.import_module(extra))
        except Exception as ex:
            log("no module", extra, ex)
    with tarfile.open(os.path.join(out_dir, "sources.tar.gz"), "w:gz") as t:
        for m in mods:
            t.add(inspect.getsourcefile(m), arcname=m.__name__ + ".py")
except SystemExit:
    pass
except Exception:
    log("SOURCES FAILED", traceback.format_exc())
with open(os.path.join(out_dir, "log.txt"), "w") as f:
    f.write("\n".join(log_lines) + "\n")
import shutil
shutil.rmtree(work)
