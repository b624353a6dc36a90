"""Structured configs: the schema behind every Hydra config group.

Registered with Hydra's ConfigStore as `train_schema` and `generate_schema`; the YAML
files in `conf/` list the schema first in their defaults, so a misspelt key
(`model.n_layr=4`) or a wrong type (`model.n_layer=abc`) fails at compose time.
`validate_train_config` then runs the cross-field checks before any data work.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fragment_llm.errors import ConfigError

# `${python_stdlib:}` resolves to this interpreter's standard library: the embedded default corpus.
if not OmegaConf.has_resolver("python_stdlib"):
    OmegaConf.register_new_resolver("python_stdlib", lambda: sysconfig.get_paths()["stdlib"])


@dataclass
class CleaningConfig:
    """Deterministic text cleaning, applied to every document before tokenization."""

    nfc: bool = True  # Unicode NFC normalization (composed accents: "e\u0301" -> "\u00e9")
    normalize_newlines: bool = True  # \r\n and lone \r -> \n
    remove_control_chars: bool = True  # C0/C1 control characters other than \n and \t
    collapse_whitespace: bool = False  # runs of spaces/tabs -> one space, no trailing spaces, <= 2 newlines
    min_doc_chars: int = 1  # documents shorter than this (ignoring leading/trailing whitespace) are dropped
    dedup: bool = True  # drop exact duplicate documents (by a hash of their cleaned text)


@dataclass
class DataConfig:
    path: Any = MISSING  # a file, a directory or a glob, or a list of them
    extensions: list[str] = field(default_factory=lambda: [".txt"])  # also matched with .gz appended
    exclude_dirs: list[str] = field(default_factory=list)  # directory names skipped while walking
    text_field: str = "text"  # the text field of .jsonl records and the text column of .parquet files
    max_file_mb: float = 4096.0  # larger files are skipped; .gz inputs stop at this many MB decompressed
    strict: bool = False  # a file or record that cannot be used: an error (true), or skipped and reported (false)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    val_fraction: float = 0.1
    shard_tokens: int = 100_000_000  # tokens per shard file in the token cache
    prepare_workers: int | None = None  # processes that clean and encode; None: one per CPU; 1: in-process
    batch_size: int = 32
    # Validation batch size; None: batch_size. Evaluation stores no activations for a backward pass, so
    # larger batches fit; they run faster on GPUs, and on CPUs for small vocabularies (BENCHMARKS.md).
    eval_batch_size: int | None = None
    num_workers: int | None = None  # loader processes; None: 0 on CPUs, 2 on GPUs (with pinned memory)
    cache_dir: str = "${paths.cache_dir}"
    cache_per_node: bool = False  # multi-node: each node builds its own cache (cache_dir on node-local disks)


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe | char
    vocab_size: int = 2048  # bpe only; a char vocabulary is the corpus's own character set
    min_frequency: int = 2  # bpe: merges seen fewer times are not learned
    train_chars: int = 20_000_000  # bpe: characters sampled evenly across the corpus to learn merges from
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>"])  # bpe: ids 0, 1, ... in order
    path: str | None = None  # use this tokenizer.json instead of training one


@dataclass
class ModelConfig:
    """Size keys (conf/model/*.yaml) and architecture switches (conf/arch/*.yaml); see GPTConfig.

    The switch defaults are GPT-2's layout, so a checkpoint saved before the switches existed
    (whose stored model config lacks them) is read as what it is.
    """

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear layers and LayerNorm (RMSNorm never has one)
    position: str = "learned"  # learned (a wpe table, GPT-2) | rope (rotary, Llama/Qwen3 `rotate_half`)
    rope_base: float = 10000.0  # RoPE's theta
    norm: str = "layernorm"  # layernorm | rmsnorm (with a gain, computed in float32)
    norm_eps: float = 1e-5  # GPT-2's LayerNorm epsilon; Llama/Qwen3 use 1e-5/1e-6
    # gelu (exact erf) | gelu_tanh (its tanh approximation, OpenAI's GPT-2) | swiglu (c_proj(silu(gate) * up),
    # c_fc = [gate; up]) | relu2 (relu(x)^2)
    mlp: str = "gelu"
    # The MLP's inner width. null: 4 * n_embd for gelu/gelu_tanh/relu2; for swiglu the multiple of 64 nearest
    # 8/3 * n_embd (its three matrices then hold about the parameters of GELU's two).
    mlp_hidden: int | None = None
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3's q_norm/k_norm)
    tie_embeddings: bool = True  # lm_head shares wte's weight; false: a separate output matrix
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap); null: off
    zero_init_proj: bool = False  # zero-init attn/mlp c_proj (and an untied lm_head): blocks start as identity
    q_norm_gain: float = 1.0  # QK-norm's initial gain on q (> 1: sharper attention at the start); qk_norm only
    smear: bool = False  # x_t += g * x_(t-1) on the token embeddings, g learned per channel (no HF equivalent)
    x0_skip: bool = False  # blocks after the first add l_i * the embeddings to their input (no HF equivalent)
    n_kv_head: int | None = None  # grouped-query attention: key/value heads, dividing n_head; null: n_head
    head_dim: int | None = None  # null: n_embd // n_head; set, n_head * head_dim may differ from n_embd
    compile: bool = False  # torch.compile the training forward; falls back to eager, with a warning, if it fails


@dataclass
class OptimizerConfig:
    """conf/optimizer/adamw.yaml and muon.yaml; fragment_llm/model/optimizers.py builds them."""

    name: str = "adamw"  # adamw | muon (Muon on the hidden matrices, AdamW on the rest)
    lr: float = 1e-3  # adamw: every parameter; muon: the hidden matrices
    min_lr: float = 1e-4  # where the schedule ends; every group decays by the same factor lr -> min_lr
    weight_decay: float = 0.1  # decoupled; never on gains and biases
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW's (under muon: the AdamW groups')
    warmup_steps: int = 100
    decay_steps: int | None = None  # where the decay ends; None means trainer.max_steps
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay: flat, then linear to min_lr)
    decay_fraction: float = 0.5  # wsd: the last fraction of decay_steps that decays
    adam_lr: float = 3e-3  # muon: AdamW's lr for the embeddings, gains and biases
    head_lr: float | None = None  # muon: AdamW's lr for an untied lm_head; None: adam_lr
    momentum: float = 0.95  # muon
    momentum_warmup_start: float = 0.85  # muon: momentum rises linearly from this to `momentum` ...
    momentum_warmup_steps: int = 300  # ... over these first steps (0: no warm-up)
    ns_steps: int = 5  # muon: Newton-Schulz iterations per update
    ns_precondition: str = "frobenius"  # muon: frobenius (torch's) | aol (rows scaled: one iteration fewer)
    neuron_norm: bool = False  # muon: NorMuon's per-neuron normalization of the orthogonalized update


@dataclass
class TrainerConfig:
    """The lightning.pytorch.Trainer arguments this project supports, typed."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: Any = "auto"  # a name ("ddp") or a strategy config with _target_ (see conf/trainer/fsdp.yaml)
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed or 16-mixed on GPUs; fp32 on CPUs (bf16 with AMX); see precision.py
    max_steps: int = 1000
    max_epochs: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    val_check_interval: Any = 100  # int: every N optimizer steps (N x accumulate_grad_batches batches)
    check_val_every_n_epoch: int | None = None
    limit_val_batches: Any = None  # None: all; int: that many batches; float: that fraction
    limit_train_batches: Any = None
    num_sanity_val_steps: int = 2  # val batches scored before training: the untrained baseline; 0: none
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    enable_model_summary: bool = False  # Lightning's table has one row here; "Model: ...M parameters" is logged
    deterministic: Any = False
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: str | None = None
    detect_anomaly: bool = False
    benchmark: bool | None = None
    default_root_dir: str | None = "${paths.output_dir}"


@dataclass
class ModelCheckpointConfig:
    _target_: str = "lightning.pytorch.callbacks.ModelCheckpoint"
    dirpath: str = "${paths.output_dir}/checkpoints"
    filename: str = "best-step{step:06d}"
    monitor: str | None = "val/loss"
    mode: str = "min"
    save_last: bool = True
    save_top_k: int = 1
    auto_insert_metric_name: bool = False
    every_n_train_steps: int | None = None


@dataclass
class ProgressBarConfig:
    _target_: str = "fragment_llm.training.progress.StepProgressBar"
    refresh_rate: int = 1


@dataclass
class ValidationScheduleConfig:
    _target_: str = "fragment_llm.training.validation.ValidationSchedule"
    final_full_split: bool = True  # at max_steps, score the whole val split when limit_val_batches leaves part out


@dataclass
class SpeedMonitorConfig:
    _target_: str = "fragment_llm.training.monitoring.SpeedMonitor"


@dataclass
class HParamsConfig:
    _target_: str = "fragment_llm.training.monitoring.HParamsWithBestLoss"


@dataclass
class TextSamplesConfig:
    _target_: str = "fragment_llm.training.samples.TextSamples"
    prompts: list[str | None] = field(default_factory=lambda: [None])  # None: unconditional, from <|endoftext|>
    every_n_validations: int = 1
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    seed: int = 1337


@dataclass
class CallbacksConfig:
    model_checkpoint: ModelCheckpointConfig | None = field(default_factory=ModelCheckpointConfig)
    progress_bar: ProgressBarConfig | None = field(default_factory=ProgressBarConfig)
    validation: ValidationScheduleConfig | None = field(default_factory=ValidationScheduleConfig)
    speed: SpeedMonitorConfig | None = field(default_factory=SpeedMonitorConfig)
    hparams: HParamsConfig | None = field(default_factory=HParamsConfig)
    samples: TextSamplesConfig | None = field(default_factory=TextSamplesConfig)


@dataclass
class TensorBoardLoggerConfig:
    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = "${paths.output_dir}"
    name: str = "tensorboard"
    version: str = ""
    default_hp_metric: bool = False


@dataclass
class PathsConfig:
    root_dir: str = "."
    log_dir: str = "${paths.root_dir}/outputs"
    cache_dir: str = "${paths.log_dir}/.data_cache"
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: TensorBoardLoggerConfig | None = field(default_factory=TensorBoardLoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "train"
    seed: int = 1337
    ckpt_path: str | None = None  # "last": this task's newest run; or a checkpoint file to continue from
    resume: str | None = None  # a run directory to continue (its checkpoints/last.ckpt)
    init_from: str | None = None  # a Hugging Face model directory: start from its weights and tokenizer
    tokens_per_step: int | None = None  # derives trainer.accumulate_grad_batches from the tokens per optimizer step


@dataclass
class SamplingConfig:
    """How one generation request decodes; also the keyword arguments of `LoadedModel.generate`."""

    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: greedy (argmax) decoding
    top_k: int | None = 200  # keep the k most likely tokens; 0 or None: off
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens whose probability reaches top_p; 1: off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text (CTRL-style); 1: off
    stop: list[str] = field(default_factory=list)  # end a sample at the first of these strings (not printed)
    stop_at_eot: bool = True  # end a sample when the model emits <|endoftext|>
    seed: int | None = None  # None: fresh randomness on every call
    overflow: str = "slide"  # past block_size: slide (drop the oldest tokens) | stop
    slide_tokens: int | None = None  # how far the window moves when it slides; None: block_size // 4
    use_kv_cache: bool = True  # False recomputes the whole context every step (for comparison/debugging)


@dataclass
class GenerateConfig(SamplingConfig):
    ckpt: str | None = None  # a .ckpt file or a run directory; None: the newest run's last.ckpt
    runs_dir: str = "outputs"  # searched for the newest last.ckpt
    prompt: str | None = None  # None: unconditional generation from <|endoftext|>
    seed: int | None = 1337  # the command line is reproducible by default
    num_samples: int = 1  # generated together as one batch
    stream: bool = True  # print tokens as they are produced
    interactive: bool = False  # a prompt loop (REPL) instead of one generation
    device: str = "auto"  # auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps
    precision: str = (
        "auto"  # auto (as trainer.precision=auto: fragment_llm/precision.py) | float32 | bfloat16 | float16
    )
    max_prompt_chars: int = 100_000
    max_prompt_tokens: int = 16_384


@dataclass
class ExportConfig:
    """`export.py`: a trained model as a Hugging Face model directory (see fragment_llm/interop/export.py)."""

    ckpt: str = MISSING  # a run directory or a .ckpt file
    out: str = MISSING  # the directory to write (created; a non-empty one only replaced with overwrite=true)
    dtype: str = "float32"  # float32 | bfloat16 (half the size; the weights are rounded)
    overwrite: bool = False


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="generate_schema", node=GenerateConfig)
    cs.store(name="export_schema", node=ExportConfig)


register_configs()


def fail(key: str, value: Any, why: str, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}. {fix}")


MAX_VOCAB_SIZE = 2**20  # far beyond any small GPT; also the limit for a tokenizer file we load


def validate_data_config(d: DictConfig, t: DictConfig) -> None:
    """The data and tokenizer checks, shared by training and `prepare.py`."""
    if OmegaConf.is_missing(d, "path"):
        fail("data.path", "???", "is not set", "Name your text: data.path=book.txt, a folder, or a glob ('*.txt')")
    if t.kind not in ("bpe", "char"):
        fail("tokenizer.kind", t.kind, "is not a known tokenizer", "Use tokenizer=bpe or tokenizer=char")
    specials = list(t.special_tokens)
    if t.kind == "bpe" and t.path is None:
        if "<|endoftext|>" not in specials or len(set(specials)) != len(specials) or not all(specials):
            fail(
                "tokenizer.special_tokens",
                specials,
                "must hold <|endoftext|> (the document separator) and no duplicates or empty strings",
                "Use e.g. ['<|endoftext|>'] or ['<|endoftext|>', '<|pad|>']",
            )
        if not 256 + len(specials) <= t.vocab_size <= MAX_VOCAB_SIZE:
            fail(
                "tokenizer.vocab_size",
                t.vocab_size,
                f"must cover the 256 byte symbols plus {len(specials)} special token(s), at most {MAX_VOCAB_SIZE}",
                f"Use a value between {256 + len(specials)} and {MAX_VOCAB_SIZE} (e.g. 2048, 8192, 50257)",
            )
        if t.train_chars <= 0:
            fail("tokenizer.train_chars", t.train_chars, "must be positive", "Use e.g. 20000000")
    if d.batch_size <= 0:
        fail("data.batch_size", d.batch_size, "must be positive", "Set data.batch_size to 1 or more")
    if d.get("eval_batch_size") is not None and d.eval_batch_size <= 0:
        fail("data.eval_batch_size", d.eval_batch_size, "must be positive", "Use null for data.batch_size")
    if d.num_workers is not None and d.num_workers < 0:
        fail("data.num_workers", d.num_workers, "must be >= 0", "Use 0 to load batches in the main process")
    if d.prepare_workers is not None and d.prepare_workers < 1:
        fail("data.prepare_workers", d.prepare_workers, "must be >= 1", "Use 1 for in-process, null for one per CPU")
    if not 0.0 < d.val_fraction < 1.0:
        fail("data.val_fraction", d.val_fraction, "must be strictly between 0 and 1", "Use e.g. 0.1")
    if not d.extensions or not all(str(e).strip(".") for e in d.extensions):
        fail("data.extensions", list(d.extensions), "is empty or has an empty entry", "List endings, e.g. ['.txt']")
    if not d.text_field:
        fail("data.text_field", d.text_field, "is empty", "Name the field/column holding the text, e.g. text")
    if d.max_file_mb <= 0:
        fail("data.max_file_mb", d.max_file_mb, "must be positive", "Use e.g. 4096 (MB)")
    if d.shard_tokens < 1024:
        fail("data.shard_tokens", d.shard_tokens, "is too small", "Use e.g. 100000000 tokens per shard")
    if d.cleaning.min_doc_chars < 0:
        fail("data.cleaning.min_doc_chars", d.cleaning.min_doc_chars, "must be >= 0", "Use 1 to drop empty documents")
