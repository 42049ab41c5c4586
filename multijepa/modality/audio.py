"""The audio modality: a sound (path, bytes, array) -> its log-mel filter bank, a window of it in
training (random) and several evenly spaced ones at evaluation, averaged; patches on a 2-D (mel,
time) grid scanned in time order, I-JEPA's blocks with time spans and mel bands."""

from __future__ import annotations

from .base import Modality, register_modality
from .image import block_masker

# modalities/ and torch are imported inside the methods: the CLI reads the registry for --help


@register_modality
class Audio(Modality):
    name = "audio"
    shard_member = "wav"
    suffixes = (".wav", ".flac", ".ogg", ".mp3")
    bind_masking = True
    derived_from = ("video",)

    def processor(self, cfg, tokenizer=None):
        """An AudioPreprocessor that also holds the run's crops (model.audio.train_crop, eval_clips)."""
        from modalities.audio import AudioPreprocessor

        a = cfg.audio
        proc = AudioPreprocessor(a.target_frames, a.sample_rate, a.num_mel_bins, a.mean, a.std,
                                 max_full_seconds=a.max_full_seconds)
        proc.train_crop, proc.eval_clips = a.train_crop, a.eval_clips
        return proc

    def decode(self, processor, value, base_dir=None):
        return processor.decode(value, base_dir)  # a DecodedAudio: the clip's fbank, or a window reader

    def derive(self, processor, values, base_dir=None):
        """A video file's sound track, (samples, rate): the first max_full_seconds of it."""
        if values.get("video") is None:
            return None
        from modalities.video import sound_track

        return sound_track(values["video"], base_dir, processor.max_full_seconds)

    def needs_finish(self, decoded):
        import torch

        return not isinstance(decoded, torch.Tensor)

    def finish(self, processor, decoded, train, rng=None):
        """A window of the clip: at random in training, `eval_clips` evenly spaced ones (clips, mel, T)
        at evaluation."""
        if not self.needs_finish(decoded):
            return decoded
        if train:
            return processor.crop(decoded, processor.train_crop, rng)
        if processor.eval_clips > 1:
            return processor.crop(decoded, "clips", num_clips=processor.eval_clips)
        return processor.crop(decoded, "start")

    def raw_features(self, processor, x):
        """The mean log-mel spectrum (B, mel), clips averaged."""
        spectrum = x.float().mean(-1)  # (B, [clips,] mel)
        return spectrum.mean(1) if self.clips(x) else spectrum

    def clips(self, x):
        return x.shape[1] if x.dim() == 4 else 0  # (B, clips, mel, T)

    def grid(self, cfg):
        a = cfg.audio
        return a.num_mel_bins // a.patch[0], a.target_frames // a.patch[1]

    def patch_shape(self, cfg):
        return tuple(cfg.audio.patch)  # (mel bins, frames)

    def masker(self, cfg):
        return block_masker(self.grid(cfg), cfg.audio.mask)

    def tower(self, spec, cfg):
        """A timm ViT over our spectrogram (one channel, our size, whatever the tower's images), as AST."""
        from modalities.towers import TimmViTTower

        if spec.library != "timm":
            raise self.no_tower(spec)
        return TimmViTTower(spec.name, in_chans=1, img_size=(cfg.audio.num_mel_bins, cfg.audio.target_frames))

    def settle_tower(self, section, facts, key):
        """Our spectrogram (size, mean/std) stays; the patches are the tower's."""
        from ..errors import ConfigError

        section.patch = (facts["patch"], facts["patch"])
        if section.num_mel_bins % facts["patch"] or section.target_frames % facts["patch"]:
            raise ConfigError(f"{key}: model.audio.num_mel_bins={section.num_mel_bins} and target_frames="
                              f"{section.target_frames} must be multiples of the tower's patch {facts['patch']}")

    def tokens(self, cfg, vocab_size=None):
        from modalities.tokens import PatchTokens

        c = cfg.audio
        return PatchTokens((c.num_mel_bins, c.target_frames), tuple(c.patch), 1, c.encoder.width, scan="columns")
