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
from fragment_llm.training.rundir import register_run_dir_resolvers

# `${python_stdlib:}` resolves to this interpreter's standard library: the embedded default corpus.
if not OmegaConf.has_resolver("python_stdlib"):
    OmegaConf.register_new_resolver("python_stdlib", lambda: sysconfig.get_paths()["stdlib"])
register_run_dir_resolvers()  # hydra.run.dir, hydra.output_subdir and sweep job names (conf/hydra/default.yaml)


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
    num_workers: int = 0
    cache_dir: str = "${paths.cache_dir}"


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
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False
    compile: bool = False  # torch.compile the training forward; falls back to eager, with a warning, if it fails


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    decay_steps: int | None = None  # cosine decay length; None means trainer.max_steps


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
    enable_model_summary: bool = True
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
    precision: str = "auto"  # auto (the rule of trainer.precision=auto, precision.py) | float32 | bfloat16 | float16
    max_prompt_chars: int = 100_000
    max_prompt_tokens: int = 16_384


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="generate_schema", node=GenerateConfig)


register_configs()


def _fail(key: str, value: Any, why: str, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}. {fix}")


def validate_train_config(cfg: DictConfig) -> None:
    """Cross-field checks that a schema cannot express; raises ConfigError naming the key."""
    m, d, t, o, tr = cfg.model, cfg.data, cfg.tokenizer, cfg.optimizer, cfg.trainer
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        if m[key] <= 0:
            _fail(f"model.{key}", m[key], "must be positive", f"Set model.{key} to a value >= 1")
    if m.n_embd % m.n_head != 0:
        _fail(
            "model.n_embd",
            m.n_embd,
            f"is not divisible by model.n_head={m.n_head}",
            "Choose n_embd as a multiple of n_head (e.g. 64 per head)",
        )
    if not 0.0 <= m.dropout < 1.0:
        _fail("model.dropout", m.dropout, "must be in [0, 1)", "Use e.g. model.dropout=0.1")
    validate_data_config(d, t)
    if tr.accumulate_grad_batches <= 0:
        _fail(
            "trainer.accumulate_grad_batches",
            tr.accumulate_grad_batches,
            "must be positive",
            "Use 1 for no accumulation",
        )
    if tr.max_steps <= 0 and not tr.fast_dev_run:
        _fail(
            "trainer.max_steps",
            tr.max_steps,
            "must be positive (the LR schedule is defined over steps)",
            "Set e.g. trainer.max_steps=1000",
        )
    if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
        _fail(
            "optimizer.min_lr",
            o.min_lr,
            f"must satisfy 0 <= min_lr <= lr (lr={o.lr}, which must be > 0)",
            "Lower optimizer.min_lr or raise optimizer.lr",
        )
    if o.warmup_steps < 0:
        _fail("optimizer.warmup_steps", o.warmup_steps, "must be >= 0", "Use 0 for no warmup")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        _fail("optimizer.betas", list(o.betas), "must be two numbers in [0, 1)", "Use e.g. [0.9, 0.95]")
    if o.weight_decay < 0:
        _fail("optimizer.weight_decay", o.weight_decay, "must be >= 0", "Use 0 to disable weight decay")
    if cfg.resume is not None and cfg.ckpt_path is not None:
        _fail("resume", cfg.resume, "and ckpt_path are both set", "Give one: resume=<run dir> or ckpt_path=last|<file>")
    if cfg.tokens_per_step is not None:
        if cfg.tokens_per_step <= 0:
            _fail("tokens_per_step", cfg.tokens_per_step, "must be positive", "Use e.g. tokens_per_step=491520")
        if tr.accumulate_grad_batches != 1:
            _fail(
                "trainer.accumulate_grad_batches",
                tr.accumulate_grad_batches,
                "is set together with tokens_per_step, which derives it",
                "Give only one of them",
            )
    samples = cfg.callbacks.get("samples")
    if samples is not None:
        if samples.every_n_validations < 1:
            _fail("callbacks.samples.every_n_validations", samples.every_n_validations, "must be >= 1", "Use e.g. 1")
        if samples.max_new_tokens < 1:
            _fail("callbacks.samples.max_new_tokens", samples.max_new_tokens, "must be >= 1", "Use e.g. 200")
        if samples.temperature < 0:
            _fail("callbacks.samples.temperature", samples.temperature, "must be >= 0", "Use 0 for greedy")


MAX_VOCAB_SIZE = 2**20  # far beyond any small GPT; also the limit for a tokenizer file we load


def validate_data_config(d: DictConfig, t: DictConfig) -> None:
    """The data and tokenizer checks, shared by training and `prepare.py`."""
    if t.kind not in ("bpe", "char"):
        _fail("tokenizer.kind", t.kind, "is not a known tokenizer", "Use tokenizer=bpe or tokenizer=char")
    specials = list(t.special_tokens)
    if t.kind == "bpe" and t.path is None:
        if "<|endoftext|>" not in specials or len(set(specials)) != len(specials) or not all(specials):
            _fail(
                "tokenizer.special_tokens",
                specials,
                "must hold <|endoftext|> (the document separator) and no duplicates or empty strings",
                "Use e.g. ['<|endoftext|>'] or ['<|endoftext|>', '<|pad|>']",
            )
        if not 256 + len(specials) <= t.vocab_size <= MAX_VOCAB_SIZE:
            _fail(
                "tokenizer.vocab_size",
                t.vocab_size,
                f"must cover the 256 byte symbols plus {len(specials)} special token(s), at most {MAX_VOCAB_SIZE}",
                f"Use a value between {256 + len(specials)} and {MAX_VOCAB_SIZE} (e.g. 2048, 8192, 50257)",
            )
        if t.train_chars <= 0:
            _fail("tokenizer.train_chars", t.train_chars, "must be positive", "Use e.g. 20000000")
    if d.batch_size <= 0:
        _fail("data.batch_size", d.batch_size, "must be positive", "Set data.batch_size to 1 or more")
    if d.get("eval_batch_size") is not None and d.eval_batch_size <= 0:
        _fail("data.eval_batch_size", d.eval_batch_size, "must be positive", "Use null for data.batch_size")
    if d.num_workers < 0:
        _fail("data.num_workers", d.num_workers, "must be >= 0", "Use 0 to load batches in the main process")
    if d.prepare_workers is not None and d.prepare_workers < 1:
        _fail("data.prepare_workers", d.prepare_workers, "must be >= 1", "Use 1 for in-process, null for one per CPU")
    if not 0.0 < d.val_fraction < 1.0:
        _fail("data.val_fraction", d.val_fraction, "must be strictly between 0 and 1", "Use e.g. 0.1")
    if not d.extensions or not all(str(e).strip(".") for e in d.extensions):
        _fail("data.extensions", list(d.extensions), "is empty or has an empty entry", "List endings, e.g. ['.txt']")
    if not d.text_field:
        _fail("data.text_field", d.text_field, "is empty", "Name the field/column holding the text, e.g. text")
    if d.max_file_mb <= 0:
        _fail("data.max_file_mb", d.max_file_mb, "must be positive", "Use e.g. 4096 (MB)")
    if d.shard_tokens < 1024:
        _fail("data.shard_tokens", d.shard_tokens, "is too small", "Use e.g. 100000000 tokens per shard")
    if d.cleaning.min_doc_chars < 0:
        _fail("data.cleaning.min_doc_chars", d.cleaning.min_doc_chars, "must be >= 0", "Use 1 to drop empty documents")
