"""Run configuration: dataclasses filled from YAML, with `key.sub=value` overrides.

Unknown keys are errors that name the key, so a typo never silently falls back to a default.
The resolved config is saved in every run folder (`config.yaml`) and is what
`MultiJEPA.from_pretrained` rebuilds the model from.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from modalities.resize import resized_patches

from .errors import ConfigError
from .modality import get_modality, registered_modalities


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows (each item, for a tuple), checked as any settings load: every
    settings dataclass lists one per numeric field in RANGES (a test holds them to it), and its
    choice fields' values in CHOICES."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is out
    hi_open: bool = False
    ordered: bool = False  # a (low, high) pair: low <= high

    def problem(self, value: Any) -> str | None:
        items = value if isinstance(value, (tuple, list)) else (value,)
        for v in items:
            if v is None:
                continue
            if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
                return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
            if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
                return f"must be {'<' if self.hi_open else '<='} {self.hi:g}"
        if self.ordered and len(items) == 2 and items[0] > items[1]:
            return "must be a (low, high) pair with low <= high"
        return None


COUNT = Range(1)  # sizes, steps, intervals: at least 1
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, lo_open=True)
SHARE = Range(0, 1)  # probabilities and fractions
ANY = Range()
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Every field of a settings dataclass against its class's RANGES and CHOICES (not nested ones)."""
    ranges, choices = getattr(type(obj), "RANGES", {}), getattr(type(obj), "CHOICES", {})
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name
        if f.name in ranges and (problem := ranges[f.name].problem(value)):
            raise ConfigError(f"config key '{key}' {problem}, got {value!r}")
        allowed = choices.get(f.name)
        if allowed is not None and value is not None and value not in allowed:
            if allowed is DEVICES and isinstance(value, str) and re.fullmatch(r"cuda:\d+", value):
                continue
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, allowed))}, got {value!r}")


# ----------------------------------------------------------------------------- model


@dataclass
class MambaConfig:
    """The Mamba blocks of a `mamba` or `hybrid` encoder (Mamba-2's mixer, scanned both ways)."""

    RANGES: ClassVar = {"state": COUNT, "expand": COUNT, "head_dim": COUNT, "conv": COUNT, "chunk": COUNT}

    state: int = 16  # N: size of each head's state per channel
    expand: int = 2  # inner width = expand * width
    head_dim: int = 32  # P: channels per head (expand * width must be a multiple)
    conv: int = 4  # kernel of the short causal depthwise convolution
    chunk: int = 32  # the scan's chunk length (speed only; the result does not depend on it)


ENCODER_KINDS = ("transformer", "mamba", "hybrid")


@dataclass
class EncoderConfig:
    RANGES: ClassVar = {"width": COUNT, "depth": COUNT, "heads": COUNT, "mlp_ratio": POSITIVE,
                        "attention_fraction": Range(0, 1, lo_open=True, hi_open=True)}
    CHOICES: ClassVar = {"kind": ENCODER_KINDS}

    width: int = 192  # features per token
    depth: int = 4  # blocks
    heads: int = 3  # attention heads (width must be a multiple)
    mlp_ratio: float = 4.0  # hidden width of each block's MLP = mlp_ratio * width
    # transformer: attention blocks; mamba: bidirectional Mamba blocks (linear in the token count);
    # hybrid: Mamba blocks first, then the last round(depth * attention_fraction) blocks attention
    kind: str = "transformer"
    attention_fraction: float = 0.5  # hybrid: the share of blocks (the last ones) that are attention
    mamba: MambaConfig = field(default_factory=MambaConfig)


@dataclass
class BlockMaskConfig:
    """The prediction masks of a patch grid: I-JEPA's multi-block masks (image) or time-frequency
    blocks (audio), or random patches (`kind: random`)."""

    CHOICES: ClassVar = {"kind": ("blocks", "random")}
    RANGES: ClassVar = {"random_ratio": Range(0, 1, lo_open=True, hi_open=True),
                        "num_targets": COUNT, "target_scale": Range(0, 1, lo_open=True, ordered=True),
                        "target_aspect": Range(0, lo_open=True, ordered=True),
                        "context_scale": Range(0, 1, lo_open=True, ordered=True), "min_keep": COUNT,
                        "full_height_prob": SHARE, "full_width_prob": SHARE}

    # blocks: targets are num_targets blocks, the context one large block minus them (I-JEPA). random:
    # the context is a random 1 - random_ratio of the patches, the targets every patch it drops (FLIP's
    # keep set; with loss.bind_input=context binding embeds the same keep set); the block keys are unused
    kind: str = "blocks"
    random_ratio: float = 0.5  # kind random: the share of patches masked (predicted)
    num_targets: int = 4  # target blocks predicted per sample
    target_scale: tuple[float, float] = (0.15, 0.2)  # each target block's share of the patches (low, high)
    target_aspect: tuple[float, float] = (0.75, 1.5)  # target blocks' height / width (low, high)
    context_scale: tuple[float, float] = (0.85, 1.0)  # the context block's share before the targets are cut out
    min_keep: int = 4  # fewest context patches a sample keeps (at most all but one)
    full_height_prob: float = 0.0  # audio: share of batches whose targets span all mel bins
    full_width_prob: float = 0.0  # audio: share of batches whose targets are mel bands over all time
    pad_context: bool = True  # keep every context token (padded per batch) instead of cutting to the batch minimum


@dataclass
class SpanMaskConfig:
    RANGES: ClassVar = {"num_targets": COUNT, "target_scale": Range(0, 1, lo_open=True, ordered=True),
                        "min_keep": COUNT}

    num_targets: int = 2  # target spans of tokens predicted per caption
    target_scale: tuple[float, float] = (0.15, 0.25)  # each span's share of the caption's tokens (low, high)
    min_keep: int = 1  # fewest context tokens a caption keeps
    pad_context: bool = True  # as the image mask's: keep every context token, padded per batch


@dataclass
class ImageConfig:
    RANGES: ClassVar = {"size": COUNT, "patch": COUNT, "mean": ANY, "std": POSITIVE,
                        "bind_mask_ratio": Range(0, 1, hi_open=True), "bind_scale": Range(0, 1, lo_open=True)}

    size: int = 64  # images are resized and centre-cropped to size x size pixels
    patch: int = 8  # pixels per side of a patch (a token): (size / patch)^2 tokens
    # timm:NAME[:PATH]: a timm Vision Transformer as the encoder (from a local weights file, or
    # random); its size, patch, width, depth, heads, mean and std then come from the tower
    pretrained: str | None = None
    # keep the encoder's weights as they are (no gradient, no EMA copy, no prediction term, norms in
    # eval mode): binding trains the other towers and the heads toward it (ImageBind's recipe)
    freeze: bool = False
    # FLIP: the share of patches dropped, at random per row, from what binding embeds in training (the
    # encoder sees only the rest, so a step costs about that much less); 0 embeds the whole input.
    # Evaluation and `embed` never mask. In a run's prediction phase the prediction context serves
    # instead (loss.bind_input=context). 0 by default: on the demo at equal wall-clock, 0.5 cost more
    # retrieval than its cheaper steps bought back (docs/results/objective.md)
    bind_mask_ratio: float = 0.0
    # CLIPA: binding sees the image resized by this factor per side in training, for the first
    # loss.bind_scale_until of the run: 0.5 makes 48 px 24 px, 9 patches instead of 36, each at its
    # place on the full grid. Whole-size inputs after it, in the prediction phase, at evaluation and in
    # `embed`. 1 = whole size; size * bind_scale must be a whole number of patches. 1 by default: on the
    # demo (then 64 px) at equal wall-clock, 0.75 until half the run was level with whole inputs for
    # images and a loss for sounds (docs/results/objective.md)
    bind_scale: float = 1.0
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)  # per colour, with mean
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: BlockMaskConfig = field(default_factory=BlockMaskConfig)


@dataclass
class TextConfig:
    RANGES: ClassVar = {"vocab_size": Range(8), "max_len": Range(2)}
    CHOICES: ClassVar = {"tokenizer": ("sentencepiece", "clip")}

    tokenizer: str = "sentencepiece"  # or "clip" (open_clip's CLIP BPE)
    tokenizer_file: str | None = None  # a SentencePiece .model; trained on the captions if unset
    # open_clip:ARCH[:TAG_OR_PATH]: an open_clip model's text tower as the encoder; its tokenizer
    # (CLIP BPE), context length, vocabulary, width, depth and heads then come from the tower
    pretrained: str | None = None
    freeze: bool = False  # fixed weights, as model.image.freeze
    vocab_size: int = 1000  # SentencePiece pieces trained on the captions (a tokenizer_file sets its own)
    max_len: int = 48  # tokens per caption; longer captions are cut
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: SpanMaskConfig = field(default_factory=SpanMaskConfig)


@dataclass
class AudioConfig:
    RANGES: ClassVar = {"sample_rate": Range(1000), "num_mel_bins": COUNT, "target_frames": COUNT, "patch": COUNT,
                        "mean": ANY, "std": POSITIVE, "eval_clips": COUNT, "max_full_seconds": POSITIVE,
                        "bind_mask_ratio": Range(0, 1, hi_open=True), "bind_scale": Range(0, 1, lo_open=True)}
    CHOICES: ClassVar = {"train_crop": ("random", "start")}

    sample_rate: int = 16000  # audio is resampled to this rate (Hz) before the filter bank
    num_mel_bins: int = 128  # the kaldi fbank's mel bins (25 ms windows, 10 ms shift)
    target_frames: int = 208  # ~2.1 s at a 10 ms shift
    patch: tuple[int, int] = (16, 16)  # (mel bins, frames) per patch
    mean: float = -4.268  # fbank normalisation (AudioSet statistics, as AST and ImageBind)
    std: float = 4.569  # with mean: fbank values are (x - mean) / (2 * std), as AST
    train_crop: str = "random"  # longer clips: a random window in training ("start" keeps the beginning)
    eval_clips: int = 3  # evaluation/embedding: average this many evenly spaced windows (ImageBind: 3)
    max_full_seconds: float = 30.0  # longer files are decoded window by window, never whole
    # timm:NAME[:PATH]: a timm Vision Transformer over the spectrogram (one channel), as AST: an image
    # model's weights are adapted (patch embedding summed over colours, positions resampled to the grid)
    pretrained: str | None = None
    freeze: bool = False  # fixed weights, as model.image.freeze
    bind_mask_ratio: float = 0.0  # as model.image.bind_mask_ratio (patches of the spectrogram)
    bind_scale: float = 1.0  # as model.image.bind_scale (mel bins and frames, each a whole number of patches)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: BlockMaskConfig = field(default_factory=lambda: BlockMaskConfig(full_height_prob=0.75))


@dataclass
class TubeMaskConfig:
    """V-JEPA's 3-D multi-block masks: each batch draws one of two kinds of tube (all frames, or
    temporal_scale of them), short-range (many small blocks) or long-range (two large ones)."""

    RANGES: ClassVar = {"short_range_blocks": COUNT, "short_range_scale": Range(0, 1, lo_open=True),
                        "long_range_blocks": COUNT, "long_range_scale": Range(0, 1, lo_open=True),
                        "aspect": Range(0, lo_open=True, ordered=True),
                        "temporal_scale": Range(0, 1, lo_open=True, ordered=True), "min_keep": COUNT}

    short_range_blocks: int = 8  # blocks of a short-range mask (V-JEPA: 8)
    short_range_scale: float = 0.15  # each one's share of a frame's tubelets (V-JEPA: 0.15)
    long_range_blocks: int = 2  # blocks of a long-range mask (V-JEPA: 2)
    long_range_scale: float = 0.7  # each one's share of a frame's tubelets (V-JEPA: 0.7)
    aspect: tuple[float, float] = (0.75, 1.5)  # blocks' height / width (low, high)
    temporal_scale: tuple[float, float] = (1.0, 1.0)  # share of the clip's time a tube spans (V-JEPA: all of it)
    min_keep: int = 4  # fewest context tubelets a clip keeps
    pad_context: bool = True  # keep every context token (padded per batch)


@dataclass
class VideoConfig:
    RANGES: ClassVar = {"size": COUNT, "patch": COUNT, "frames": COUNT, "tubelet": COUNT, "clip_seconds": POSITIVE,
                        "eval_clips": COUNT, "max_decoded_frames": COUNT, "mean": ANY, "std": POSITIVE,
                        "bind_mask_ratio": Range(0, 1, hi_open=True)}
    CHOICES: ClassVar = {"train_crop": ("random", "start")}

    size: int = 64  # frames are resized and centre-cropped to size x size pixels, as images are
    patch: int = 16  # pixels per side of a tubelet (V-JEPA: 16)
    frames: int = 8  # frames sampled evenly from each window of a clip
    tubelet: int = 2  # frames per tubelet (V-JEPA: 2): (frames / tubelet) * (size / patch)^2 tokens
    clip_seconds: float = 2.0  # the window the frames are sampled from (a shorter file: all of it)
    train_crop: str = "random"  # the window's start in training: "random", or "start" (the beginning)
    eval_clips: int = 2  # evaluation/embedding: average this many evenly spaced windows
    max_decoded_frames: int = 256  # frames decoded per window at most, whatever the file says
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # as model.image.mean
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)  # as model.image.std
    # timm:NAME[:PATH] or open_clip:ARCH[:TAG_OR_PATH]: an image Vision Transformer inflated to clips,
    # as ImageBind's video encoder (patch embedding spread over the tubelet's frames, a time position
    # added); its size, patch, width, depth, heads, mean and std then come from the tower
    pretrained: str | None = None
    freeze: bool = False  # fixed weights, as model.image.freeze
    bind_mask_ratio: float = 0.0  # as model.image.bind_mask_ratio (tubelets)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: TubeMaskConfig = field(default_factory=TubeMaskConfig)


@dataclass
class PredictorConfig:
    RANGES: ClassVar = {"width": COUNT, "depth": COUNT, "heads": COUNT}

    width: int = 96  # the predictors' features per token (narrower than the encoders, as I-JEPA)
    depth: int = 3  # blocks of each modality's predictor
    heads: int = 3  # attention heads
    cross_attention: bool = True  # attend to the other modalities' context tokens
    # false: predict a modality's masked tokens from the other modalities' whole inputs alone, read from
    # binding's own forward: no masked online forward, so a prediction step costs less (only the rows
    # that have another modality are predicted; needs cross_attention and two learned modalities)
    own_context: bool = True


@dataclass
class ModelConfig:
    RANGES: ClassVar = {"embed_dim": COUNT, "target_layers": COUNT, "ema_momentum": Range(0, 1, ordered=True),
                        "ema_horizon": Range(0, 1, hi_open=True), "ema_horizon_max_steps": COUNT,
                        "init_temperature": POSITIVE}
    CHOICES: ClassVar = {"target": ("ema", "sigreg"), "target_norm": ("layer", "instance", "position", "instance_position")}

    modalities: list[str] = field(default_factory=lambda: ["image", "text", "audio"])  # encoders built and trained
    embed_dim: int = 128  # size of the shared embedding space every modality's head maps into
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)  # used when model.modalities names video
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    ema_momentum: tuple[float, float] = (0.996, 1.0)  # target-encoder momentum, start -> end
    # > 0: the momentum starts at 1 - 1 / (ema_horizon * train.max_steps) instead of ema_momentum[0]
    # (and still ramps to ema_momentum[1]): targets average over that share of the run whatever its
    # length. I-JEPA's 0.996 is a 250-step average, tuned for runs of ~100k steps; in a run of 300 it
    # leaves half the target's random initial weights in place at the end. 0 keeps ema_momentum.
    ema_horizon: float = 0.05
    # ... but never longer than this many steps (I-JEPA's 0.996 is a 250-step average): a 100k-step run
    # would otherwise start at 1 - 1/5000 and keep most of its random initial target through warm-up
    ema_horizon_max_steps: int = 250
    # where prediction targets come from: "ema" (I-JEPA: an EMA copy of each encoder) or "sigreg"
    # (LeJEPA: the online encoder itself under stop-gradient, no copy, with loss.sigreg_weight > 0
    # keeping its features from collapsing)
    target: str = "ema"
    # how targets are normalised: "layer" (I-JEPA: each token over its features) or "instance" (first
    # each feature over the tokens of its sample, as data2vec: a code shared by all of an input's
    # tokens cannot be predicted, so prediction alone cannot win by making every token carry it);
    # "position": first each token minus the batch's mean token at its place (what every input has
    # there, e.g. a mel band's level, cannot be predicted); "instance_position": both, in that order
    target_norm: str = "layer"
    # > 1: targets are the mean of the target encoder's last `target_layers` block outputs, each
    # instance-normalised first (data2vec), instead of its last output alone
    target_layers: int = 1
    init_temperature: float = 0.07  # binding's InfoNCE temperature (CLIP's); the start, if learned
    # Fixed by default: a learned one drifts up while embeddings are poor, and binding stalls. ImageBind
    # fixes the logit scale of what it binds to images (audio 20, i.e. T = 0.05; depth 5; thermal 10; IMU 5)
    # and learns only the text one (from 1/0.07, as CLIP). Learned here, the log-scale is clamped to
    # [0, ln 100] after every step, as open_clip does.
    learn_temperature: bool = False

    def __getattr__(self, name: str) -> Any:
        """`model.<name>` of a registered modality that is not one of the fields above (its
        `Modality.config_class`): the settings the config gave, or its defaults."""
        cls = section_class(name) if not name.startswith("_") else None
        if cls is None:
            raise AttributeError(f"'ModelConfig' object has no attribute '{name}'")
        return self.__dict__.setdefault("_sections", {}).setdefault(name, cls())


# ----------------------------------------------------------------------------- training


OBJECTIVES = ("jepa", "clip")
BIND_INPUTS = ("context", "full")
SOURCE_FORMATS = ("auto", "json", "csv", "parquet", "saved", "webdataset", "hub")


@dataclass
class LossConfig:
    RANGES: ClassVar = {"pred_weight": NON_NEGATIVE, "bind_weight": NON_NEGATIVE, "variance_weight": NON_NEGATIVE,
                        "sigreg_weight": NON_NEGATIVE, "collapse_std": NON_NEGATIVE, "collapse_patience": COUNT,
                        "pred_start": Range(0, 1, hi_open=True), "pred_warmup_steps": NON_NEGATIVE,
                        "bind_scale_until": SHARE,
                        "rankme_floor": SHARE}
    CHOICES: ClassVar = {"objective": OBJECTIVES, "bind_input": BIND_INPUTS}

    # jepa: masked latent prediction + binding. clip: binding alone (open_clip's symmetric InfoNCE) on
    # unmasked inputs, with no masks, target encoders or predictors: the baseline with the same towers.
    objective: str = "jepa"
    # AdamW normalises each weight's update, so for the encoders only the ratio of the two terms'
    # gradients matters: at 1 prediction is 0.1-0.5 % of it, at 30 11-19 % (grad_share/pred in metrics.jsonl).
    # 0 also builds no target encoders or predictors.
    pred_weight: float = 30.0
    bind_weight: float = 1.0  # weight of the binding (contrastive) term
    # When prediction starts, as a share of the run (of train.max_steps, or of train.max_seconds in a
    # time-budgeted run), as SigLIP 2 adds its masked-prediction terms for the last 20 % only: before it
    # the run binds alone (no target encoder or predictor runs); at it each target encoder is copied from
    # its online encoder and the predictors start. 0: prediction from the first step.
    pred_start: float = 0.8
    # CLIPA's schedule for model.<m>.bind_scale < 1: binding sees resized inputs for this share of the run
    # (counted as pred_start), whole-size ones after it, so that the model ends on the inputs evaluation
    # embeds (a run's prediction phase binds whole-size inputs whatever this says)
    bind_scale_until: float = 0.5
    # after pred_start: the predictors' learning rate warms up from 0 over this many steps (then decays
    # with the run's cosine), and the prediction weight ramps from 0 to pred_weight alongside
    pred_warmup_steps: int = 10
    # what the binding term embeds while the run predicts: "full", the unmasked input, as inference sees
    # it (a second online forward of the rows that have a second modality), or "context", for images
    # and audio the masked context the predictor reads (one online forward with gradients, as FLIP, and
    # one without, of the whole input, for the heads' running statistics that evaluation normalises with;
    # captions are always bound whole). Before the prediction phase binding sees model.<m>.bind_mask_ratio's keep set.
    bind_input: str = "full"
    bind_anchor: str | None = None  # e.g. "image": bind only pairs that include it (ImageBind)
    variance_weight: float = 0.0  # optional VICReg-style variance term on the shared embeddings
    sigreg_weight: float = 0.0  # SIGReg on the online encoders' context tokens (needed by model.target=sigreg)
    collapse_std: float = 1e-4  # stop when the target features' std falls below this
    collapse_patience: int = 20  # ... for this many consecutive log steps
    # warn (log line and `collapse/shared/<m>` in metrics.jsonl) when the RankMe of a modality's shared
    # embeddings in a log step falls below this share of the highest it reached in the run: the shared
    # space is collapsing (e.g. binding over too few pairs per batch, see data.min_pair_fraction). On the
    # demo, healthy runs stayed above 0.5 of their peak; runs without pair-aware batching fell to 0.12-0.23
    rankme_floor: float = 0.35

    @property
    def predicts(self) -> bool:
        """Whether the run has a prediction term, hence target encoders and predictors to build."""
        return self.objective == "jepa" and self.pred_weight > 0

    @property
    def masks(self) -> bool:
        """Whether batches carry JEPA masks (and the online encoders see only the context)."""
        return self.objective == "jepa"


@dataclass
class SourceConfig:
    """One paired dataset in a mixture (the ImageBind setting: image-text from one, image-audio from another)."""

    RANGES: ClassVar = {"weight": POSITIVE}
    CHOICES: ClassVar = {"format": SOURCE_FORMATS}

    path: str  # manifest (.jsonl/.csv/.parquet), saved `datasets` folder, tar shards (glob or {000..009}), or hub name
    name: str | None = None  # label in logs and errors; default: the file or folder name
    weight: float = 1.0  # sampling weight: the share of batch slots drawn from this source
    format: str = "auto"  # auto | json | csv | parquet | saved | webdataset | hub
    columns: dict[str, str] = field(default_factory=dict)  # renames on top of data.columns, e.g. {image: jpg, text: txt}
    modalities: list[str] | None = None  # take only these from this source (default: all of model.modalities)
    split: str = "train"  # for hub datasets and saved DatasetDicts


@dataclass
class DataConfig:
    RANGES: ClassVar = {"batch_size": COUNT, "shuffle_buffer": COUNT, "max_bad_fraction": SHARE,
                        "num_workers": NON_NEGATIVE, "prefetch_factor": COUNT, "min_pair_fraction": Range(0, 1, hi_open=True)}
    CHOICES: ClassVar = {"on_error": ("raise", "skip")}

    train: str | None = None  # one manifest (shorthand for a single source); None = the built-in demo data
    sources: list[SourceConfig] = field(default_factory=list)  # several sources mixed by weight
    # the manifest column of each modality and of the label, e.g. {image: jpg, text: caption}
    columns: dict[str, str] = field(
        default_factory=lambda: {"image": "image", "text": "text", "audio": "audio", "label": "label"}
    )
    batch_size: int = 64  # the global batch: split over processes (torchrun) and train.grad_accum micro-steps
    streaming: bool = False  # iterate sources as streams (corpora larger than memory or disk)
    shuffle: bool = True  # map-style: a fresh permutation per epoch; streaming: shard order + buffer
    shuffle_buffer: int = 1000  # streaming only
    on_error: str = "raise"  # raise | skip: what a row that cannot be decoded does
    max_bad_fraction: float = 0.05  # with skip: stop when more than this share of rows was bad
    num_workers: int = 0  # DataLoader processes decoding rows; 0 decodes in the training process
    persistent_workers: bool = True  # keep the workers between epochs
    prefetch_factor: int = 4  # batches each worker prepares ahead
    pin_memory: bool = True  # only takes effect on CUDA
    cache_decoded: bool = False  # keep decoded samples in memory after the first epoch (small map-style data)
    # a row with a video and no audio takes the video file's sound track as its audio (MJEPA's
    # setting: one file, frames and sound predicted from each other); read up to model.audio.max_full_seconds
    audio_from_video: bool = False
    # Pair-aware batching: a map-style source whose rows are partly pairs (two or more modalities) and
    # partly single-modality rows, with fewer pairs than this share, is drawn as two parts, its pairs
    # taking this share of its batch slots: InfoNCE over the few pairs of a natural mixture's batch is
    # satisfied by a collapsed space. 0 draws rows as they come.
    min_pair_fraction: float = 0.5


@dataclass
class LrScaleConfig:
    """Learning-rate scale of each modality's encoder (a pretrained tower tuned gently, as fine-tuning
    recipes do); heads, predictors and the rest learn at optim.lr. Set before a run starts: turning
    scales on or off changes the optimizer's groups, which a resumed run must keep."""

    RANGES: ClassVar = {"image": POSITIVE, "text": POSITIVE, "audio": POSITIVE, "video": POSITIVE}

    image: float = 1.0  # the image encoder learns at optim.lr * this
    text: float = 1.0  # the text encoder's
    audio: float = 1.0  # the audio encoder's
    video: float = 1.0  # the video encoder's


@dataclass
class OptimConfig:
    RANGES: ClassVar = {"lr": NON_NEGATIVE, "min_lr": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE,
                        "weight_decay": NON_NEGATIVE, "final_weight_decay": NON_NEGATIVE,
                        "betas": Range(0, 1, hi_open=True), "eps": POSITIVE, "grad_clip": POSITIVE}

    lr: float = 1e-3  # AdamW's peak learning rate, after warm-up (then cosine decay to min_lr)
    min_lr: float = 1e-5  # the learning rate at the end of the run
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    weight_decay: float = 0.04  # at the start; cosine to final_weight_decay (I-JEPA's schedule)
    final_weight_decay: float = 0.1  # at the end of the run
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW's moment decays
    eps: float = 1e-8  # AdamW's: updates of weights whose gradient is below it are damped
    grad_clip: float = 1.0  # the gradient's total norm is scaled down to at most this
    lr_scale: LrScaleConfig = field(default_factory=LrScaleConfig)


@dataclass
class TrainConfig:
    RANGES: ClassVar = {"max_steps": COUNT, "max_seconds": NON_NEGATIVE, "seed": NON_NEGATIVE, "threads": NON_NEGATIVE,
                        "log_every": COUNT, "ckpt_every": COUNT, "keep_checkpoints": NON_NEGATIVE, "grad_accum": COUNT,
                        "eval_every": NON_NEGATIVE}
    CHOICES: ClassVar = {"precision": ("fp32", "bf16"), "device": DEVICES, "parallel": ("ddp", "fsdp")}

    max_steps: int = 1000  # optimizer steps of the run (the schedules' length)
    # > 0: stop after this many seconds of training steps (checkpoint writes not counted; a resumed run
    # counts the seconds already trained), with a checkpoint there. The schedules (LR decay, weight
    # decay, EMA) are then laid out over min(max_steps, the steps the rate measured over the first
    # CALIBRATION_STEPS predicts): fixed once, before the LR warmup ends, and kept in checkpoints.
    max_seconds: float = 0.0
    seed: int = 0  # weights, masks and data order; the same seed trains the same run
    precision: str = "fp32"  # or "bf16" (autocast)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    log_every: int = 10  # steps between metrics.jsonl records and progress lines
    ckpt_every: int = 200  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # the newest this many are kept (and the held-out best); 0 keeps them all
    # a held-out manifest (or demo:test) scored at checkpoints while the run trains: mean R@1 over the
    # retrieval directions (and class-match P@1 where rows have labels) in metrics.jsonl and the log, a
    # warning when it stays below its best, and the best checkpoint kept. "" = none
    eval_data: str = ""
    eval_every: int = 0  # steps between held-out evaluations, each with a checkpoint (the best is kept); 0 = at ckpt_every
    plot: bool = True  # RUN/metrics.png (`multijepa plot`) at checkpoints at most once a minute, and at the end
    tensorboard: bool = False  # also write RUN/tensorboard event files (needs `pip install tensorboard`)
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory
    compile: bool = False  # torch.compile each transformer block (CUDA mostly; needs a C++ compiler on CPU)
    grad_accum: int = 1  # micro-steps per optimizer step; the binding loss sees one micro-batch (x processes) at a time
    parallel: str = "ddp"  # under torchrun: ddp (replicate) | fsdp (FSDP2 fully_shard: shard weights, grads, optimizer)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        _validate(self)


BUILT_IN = ("image", "text", "audio", "video")  # the modalities whose sections are fields of ModelConfig


def section_class(name: str) -> type | None:
    """The settings dataclass of `model.<name>` for a registered modality that brings its own
    (`Modality.config_class`); None for the built-ins, whose sections are ModelConfig's fields."""
    spec = get_modality(name) if name in registered_modalities() else None
    return getattr(spec, "config_class", None)

# ----------------------------------------------------------------------------- fine-tuning wings


@dataclass
class FinetuneOptimConfig:
    """AdamW and its schedule for a fine-tuning wing (VQA, captioning) over a pretrained encoder."""

    RANGES: ClassVar = {"lr": NON_NEGATIVE, "encoder_lr_scale": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
                        "betas": Range(0, 1, hi_open=True), "eps": POSITIVE, "warmup_steps": NON_NEGATIVE,
                        "min_lr": NON_NEGATIVE, "grad_clip": POSITIVE}

    lr: float = 1.0e-3  # AdamW's peak learning rate of the new layers
    encoder_lr_scale: float = 0.1  # pretrained encoders learn at lr * scale; 0 freezes them
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decays
    eps: float = 1e-8  # AdamW's epsilon
    warmup_steps: int = 50  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1.0e-5  # the learning rate at the end
    grad_clip: float = 1.0  # the gradient's total norm is scaled down to at most this


@dataclass
class FinetuneTrainConfig:
    """The loop of a fine-tuning wing: steps, batch, checkpoints, device."""

    RANGES: ClassVar = {"max_steps": COUNT, "batch_size": COUNT, "seed": NON_NEGATIVE, "log_every": COUNT,
                        "ckpt_every": COUNT, "threads": NON_NEGATIVE, "num_workers": NON_NEGATIVE}
    CHOICES: ClassVar = {"device": DEVICES}

    max_steps: int = 600  # optimizer steps
    batch_size: int = 64  # rows per step
    seed: int = 0  # the new layers' weights and the data order
    log_every: int = 50  # steps between metrics.jsonl records
    ckpt_every: int = 200  # full-state checkpoints for --resume
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch threads (0 = torch's default)
    num_workers: int = 0  # DataLoader processes; 0 decodes in the training process


# ----------------------------------------------------------------------------- loading


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated type, naming the key on error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"config key '{key}' must have {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads 3e-3 as a string
        except ValueError:
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}") from None
    if tp in (int, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    sections = {}  # model.<name> of registered modalities that bring their own settings
    for k in list(data):
        where = f"{prefix}.{k}" if prefix else k
        if k not in names and cls is ModelConfig and section_class(k) is not None:
            sections[k] = _coerce(data[k], section_class(k), where)
        elif k not in names:
            hint = "; a modality of your own is known once its module is imported: MULTIJEPA_PLUGINS=your.module" \
                if cls is ModelConfig else ""
            raise ConfigError(f"unknown config key '{where}' (known: {', '.join(sorted(names))}{hint})")
    data = {k: v for k, v in data.items() if k not in sections}
    for f in dataclasses.fields(cls):
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            where = f"{prefix}.{f.name}" if prefix else f.name
            raise ConfigError(f"config key '{where}' is required")
    data = dict(data)
    for f in dataclasses.fields(cls):  # a partly given section keeps its field's own defaults,
        if isinstance(data.get(f.name), dict) and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()  # e.g. the audio mask's full_height_prob=0.75, not the class's 0
            if dataclasses.is_dataclass(default):
                data[f.name] = _merge(to_dict(default), data[f.name])
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    if sections:
        obj.__dict__["_sections"] = sections
    check_ranges(obj, prefix)
    return obj


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# shipped configs renamed, by their old names: those names keep working
ALIASES = {"base": "vit_b16_gpu"}
# keys of the run config that hold paths: relative ones in a config file start from its folder
PATH_KEYS = (("data", "train"), ("model", "text", "tokenizer_file"), ("train", "eval_data"))


def _shipped_dir() -> Path:
    return Path(str(resources.files("multijepa.configs")))


def shipped_config_names() -> list[str]:
    """The names of the configs shipped in configs/, sorted."""
    return sorted(f.name[:-5] for f in _shipped_dir().iterdir() if f.name.endswith(".yaml"))


def find_config(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of one shipped in configs/ (`demo`, `tiny`, ...)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    name = ALIASES.get(str(name_or_path), str(name_or_path))
    shipped = _shipped_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"no config named '{name_or_path}' (shipped: {', '.join(shipped_config_names())}; "
                      "or give a .yaml path)")


def read_config_tree(path: Path, anchor_paths: bool = False, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file's keys on top of those of the config it names in `extends:` (a shipped name, or a
    .yaml path relative to this file). `anchor_paths`: a relative data or tokenizer path in a config
    of your own is read from the config's folder when it is there, else from the folder you run in
    (as a shipped config's paths are, and a hub dataset's name stays a name)."""
    tree = _read_yaml(path)
    if anchor_paths and path.resolve().parent != _shipped_dir().resolve():
        _anchor(tree, path.parent)
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be a config name or a .yaml path, got {parent!r}")
    relative = Path(parent).suffix in (".yaml", ".yml") and not Path(parent).is_absolute()
    target = find_config(path.parent / parent if relative else parent)
    if target.resolve() in _seen or target.resolve() == path.resolve():
        raise ConfigError(f"{path}: extends {parent}, which extends it again")
    return _merge(read_config_tree(target, anchor_paths, (*_seen, path.resolve())), tree)


def _anchor(tree: dict, base: Path) -> None:
    """Relative paths in `tree` (PATH_KEYS, data.sources[].path) that exist under `base` made to
    start from it (a shard pattern: when its folder does)."""
    def anchored(value):
        if not isinstance(value, str) or not value or "://" in value or Path(value).is_absolute():
            return value
        fixed = value.split("*")[0].split("{")[0]
        there = (base / value).exists() if fixed == value else (base / fixed).parent.exists() and fixed != ""
        return str(base / value) if there else value

    for keys in PATH_KEYS:
        node = tree
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = anchored(node[keys[-1]])
    data = tree.get("data")
    for src in (data.get("sources") or []) if isinstance(data, dict) else []:
        if isinstance(src, dict) and "path" in src:
            src["path"] = anchored(src["path"])


def load_settings(cls: type, source: str | Path | dict | None = None, overrides: list[str] | None = None) -> Any:
    """The one config loader, for the run config and every other settings dataclass (VQA, index,
    a VQA folder's model shapes): defaults <- a YAML file (a path, or a name shipped in configs/)
    or a dict <- `key.sub=value` overrides (values parsed as YAML), filled into `cls` with unknown
    keys named and types checked, then `cfg.validate()` where `cls` has one."""
    tree: dict = {}
    if isinstance(source, dict):
        tree = dict(source)
    elif source is not None:
        tree = read_config_tree(find_config(source), anchor_paths=cls is Config)
    cfg = _from_dict(cls, apply_overrides(tree, overrides or []))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def _read_yaml(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return tree


def load_config(name_or_path: str | Path | dict | None = None, overrides: list[str] | None = None) -> Config:
    """The run config: defaults <- YAML file (or a dict) <- `key.sub=value` overrides."""
    return load_settings(Config, name_or_path, overrides)


# Keys that came with a new default recipe (issue 29: prediction late, FLIP's masked binding, pair-aware
# batching, a bounded EMA horizon), and the value a run saved before them trained with: a run folder's
# config.yaml holds every key of its day, so one without these keys is resumed and rebuilt as it ran.
LEGACY_RUN_VALUES = {
    ("loss", "pred_start"): 0.0,
    ("model", "image", "bind_mask_ratio"): 0.0,
    ("model", "audio", "bind_mask_ratio"): 0.0,
    ("model", "image", "bind_scale"): 1.0,
    ("model", "audio", "bind_scale"): 1.0,
    ("data", "min_pair_fraction"): 0.0,
    ("model", "ema_horizon_max_steps"): 1_000_000_000,
}


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """A run folder's saved config.yaml (+ overrides): as `load_config`, except that keys it lacks
    because the run predates them take the value the run trained with (`LEGACY_RUN_VALUES`), not
    today's default."""
    tree = _read_yaml(Path(path))
    for keys, value in LEGACY_RUN_VALUES.items():
        node = tree
        for k in keys[:-1]:
            node = node.setdefault(k, {}) if isinstance(node.get(k, {}), dict) else {}
        node.setdefault(keys[-1], value)
    return load_settings(Config, tree, overrides)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """`key.sub=value` strings (values parsed as YAML) merged into a config tree."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' must look like key.sub=value")
        k, v = ov.split("=", 1)
        extra: dict = {}
        _set_dotted(extra, k.strip(), yaml.safe_load(v))
        tree = _merge(tree, extra)
    return tree


def _validate(cfg: Config) -> None:
    mods = cfg.model.modalities
    known = registered_modalities()
    if not mods:
        raise ConfigError(f"model.modalities must name at least one of {', '.join(known)}")
    for m in mods:
        if m not in known:
            raise ConfigError(f"model.modalities: unknown modality '{m}' (known: {', '.join(known)}; one of your own "
                              "is known once its module is imported: MULTIJEPA_PLUGINS=your.module)")
        if not hasattr(cfg.model, m):
            raise ConfigError(f"model.modalities: modality '{m}' has no settings (its Modality.config_class)")
    lo = cfg.loss
    if lo.objective == "clip" and (lo.bind_weight <= 0 or len(mods) < 2):
        raise ConfigError("loss.objective=clip trains by binding alone: it needs loss.bind_weight > 0 and two modalities")
    if cfg.model.target == "sigreg" and lo.predicts and lo.sigreg_weight <= 0:
        raise ConfigError("model.target=sigreg needs loss.sigreg_weight > 0 (without it nothing stops the "
                          "online encoder's targets from collapsing)")
    if not cfg.model.predictor.own_context and lo.predicts and (not cfg.model.predictor.cross_attention or len(mods) < 2):
        raise ConfigError("model.predictor.own_context=false predicts each modality from the others alone: it needs "
                          "model.predictor.cross_attention=true and two modalities")
    if cfg.loss.bind_anchor is not None and cfg.loss.bind_anchor not in mods:
        raise ConfigError(f"loss.bind_anchor '{cfg.loss.bind_anchor}' is not in model.modalities {mods}")
    if cfg.data.batch_size % cfg.train.grad_accum:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be a multiple of train.grad_accum={cfg.train.grad_accum}")
    d = cfg.data
    if d.train is not None and d.sources:
        raise ConfigError("give either data.train (one manifest) or data.sources (a mixture), not both")
    names = set()
    for i, src in enumerate(d.sources):
        if src.name is not None and src.name in names:
            raise ConfigError(f"data.sources[{i}].name '{src.name}' is used twice")
        names.add(src.name)
    checked = list(dict.fromkeys([*BUILT_IN, *mods]))  # every built-in section, and those of the others in use
    encoders = [(f"model.{m}.encoder", getattr(cfg.model, m).encoder) for m in checked]
    for key, enc in (*encoders, ("model.predictor", cfg.model.predictor)):
        if enc.width % enc.heads:
            raise ConfigError(f"{key}.width={enc.width} must be a multiple of {key}.heads={enc.heads}")
    for m in checked:
        key, c = f"model.{m}", getattr(cfg.model, m)
        pretrained = getattr(c, "pretrained", None)
        if cfg.model.target_layers > 1 and pretrained is not None and m in cfg.model.modalities and not c.freeze:
            raise ConfigError(f"model.target_layers={cfg.model.target_layers} averages our encoders' blocks; {key}.pretrained "
                              "is an open_clip/timm tower: keep model.target_layers=1 with it")
        if c.encoder.kind == "transformer":
            continue
        if pretrained is not None:
            raise ConfigError(f"{key}.encoder.kind={c.encoder.kind}: a pretrained tower ({key}.pretrained) is a "
                              "transformer; drop one of the two")
        if c.encoder.kind == "hybrid" and c.encoder.depth < 2:
            raise ConfigError(f"{key}.encoder.kind=hybrid needs {key}.encoder.depth >= 2 (Mamba blocks, then attention)")
        mb = c.encoder.mamba
        if (mb.expand * c.encoder.width) % mb.head_dim:
            raise ConfigError(f"{key}.encoder: mamba.expand * width = {mb.expand * c.encoder.width} must be a multiple "
                              f"of mamba.head_dim={mb.head_dim}")
    if cfg.model.image.size % cfg.model.image.patch:
        raise ConfigError("model.image.size must be a multiple of model.image.patch")
    v = cfg.model.video
    if v.size % v.patch or v.frames % v.tubelet:
        raise ConfigError(f"model.video: size={v.size} must be a multiple of patch={v.patch}, and frames={v.frames} "
                          f"of tubelet={v.tubelet}")
    for key, k in (("model.image.mask", cfg.model.image.mask), ("model.audio.mask", cfg.model.audio.mask)):
        if k.full_height_prob + k.full_width_prob > 1:
            raise ConfigError(f"{key}: full_height_prob + full_width_prob = {k.full_height_prob + k.full_width_prob:g}"
                              " is over 1 (each batch draws one kind of target block)")
    a = cfg.model.audio
    if a.num_mel_bins % a.patch[0] or a.target_frames % a.patch[1]:
        raise ConfigError("model.audio.num_mel_bins and target_frames must be multiples of model.audio.patch [mel, frames]")
    _check_bind_scales(cfg, checked)
    for f in dataclasses.fields(cfg.model):  # every patch grid with these masks (grids divide evenly: checked above)
        k = getattr(getattr(cfg.model, f.name), "mask", None)
        if not (isinstance(k, BlockMaskConfig) and k.kind == "random"):
            continue
        m, n = f.name, math.prod(get_modality(f.name).grid(cfg.model))
        if max(1, round(n * (1 - k.random_ratio))) >= n:  # as RandomMasker keeps them
            raise ConfigError(f"model.{m}.mask.random_ratio={k.random_ratio:g} of {n} patches leaves no target; "
                              "mask a larger share")


def _check_bind_scales(cfg: Config, modalities: list[str]) -> None:
    """model.<m>.bind_scale (CLIPA's resized binding): our own patch encoder, whole patches, no FLIP too."""
    for m in modalities:
        c, key = getattr(cfg.model, m), f"model.{m}"
        scale = getattr(c, "bind_scale", 1.0)
        if scale == 1.0:
            continue
        modality = get_modality(m)
        patches = modality.patch_shape(cfg.model)
        if patches is None:
            raise ConfigError(f"{key}.bind_scale={scale:g}: the {m} modality's tokens are not patches of an input "
                              "that can be resized; keep bind_scale=1")
        if getattr(c, "pretrained", None) is not None:
            raise ConfigError(f"{key}.bind_scale={scale:g} resizes our patch encoder's input; {key}.pretrained is "
                              "an open_clip/timm tower: keep bind_scale=1 with it")
        if getattr(c, "bind_mask_ratio", 0) > 0:
            raise ConfigError(f"{key}: bind_scale={scale:g} and bind_mask_ratio={c.bind_mask_ratio:g} are two ways "
                              "to bind fewer tokens; choose one")
        if c.encoder.kind != "transformer":  # a scan's order is laid out on the whole-size grid
            raise ConfigError(f"{key}.bind_scale={scale:g} needs {key}.encoder.kind=transformer (a Mamba "
                              "scan follows the whole-size grid's order)")
        for n, patch in zip(modality.grid(cfg.model), patches):  # a side of n patches (whole: checked above)
            try:
                resized_patches(n * patch, patch, scale)
            except ValueError as e:
                raise ConfigError(f"{key}.bind_scale: {e}") from None


def to_dict(cfg: Any) -> dict:
    """A config dataclass as plain YAML-ready data (tuples as lists)."""
    def plain(x: Any) -> Any:
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        if isinstance(x, list):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    tree = plain(dataclasses.asdict(cfg))
    model, node = (cfg.model, tree["model"]) if isinstance(cfg, Config) else (cfg, tree)
    if isinstance(model, ModelConfig):  # the sections of registered modalities, where they were set
        node.update({m: to_dict(c) for m, c in model.__dict__.get("_sections", {}).items()})
    return tree


def changed_keys(a: Any, b: Any) -> list[str]:
    """Dotted keys whose values differ between two configs of one class."""
    def flat(tree: Any, prefix: str = "") -> dict:
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()} if tree else {prefix: tree}

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k.rstrip(".") for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def save_config(cfg: Any, path: str | Path) -> None:
    """Any config dataclass to YAML, the form `load_settings` reads back."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
