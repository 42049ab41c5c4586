"""The video modality: a clip (path or bytes) -> (3, frames, size, size), frames sampled evenly from
a window (random in training, several evenly spaced windows averaged at evaluation, as audio's),
each preprocessed as an image; V-JEPA's tubelets with 3-D positions and its 3-D multi-block masks."""

from __future__ import annotations

from .base import Modality, register_modality

# modalities/ (PyAV, torch) is imported inside the methods: the CLI reads the registry for --help


@register_modality
class Video(Modality):
    name = "video"
    suffixes = (".mp4", ".webm", ".mkv", ".mov", ".avi")
    shard_member = "mp4"
    bind_masking = True

    def processor(self, cfg, tokenizer=None):
        from modalities.video import VideoPreprocessor

        v = cfg.video
        proc = VideoPreprocessor(v.size, v.frames, v.clip_seconds, v.mean, v.std, v.max_decoded_frames)
        proc.train_crop, proc.eval_clips = v.train_crop, v.eval_clips
        return proc

    def decode(self, processor, value, base_dir=None):
        return processor.decode(value, base_dir)  # the header only: frames are decoded per window

    def needs_finish(self, decoded):
        from modalities.video import DecodedVideo

        return isinstance(decoded, DecodedVideo)

    def finish(self, processor, decoded, train, rng=None):
        """A window's frames: at random in training, `eval_clips` evenly spaced ones at evaluation."""
        if not self.needs_finish(decoded):
            return decoded
        if train:
            return processor.crop(decoded, processor.train_crop, rng)
        return processor.crop(decoded, "clips", num_clips=processor.eval_clips)

    def clips(self, x):
        return x.shape[1] if x.dim() == 6 else 0  # (B, clips, 3, T, H, W)

    def raw_features(self, processor, x):
        """The clip's mean frame, flattened (clips averaged)."""
        if self.clips(x):
            x = x.float().mean(1)
        return x.float().mean(2).flatten(1)  # (B, 3 * H * W)

    def grid(self, cfg):
        v = cfg.video
        return v.frames // v.tubelet, v.size // v.patch, v.size // v.patch

    def masker(self, cfg):
        from modalities.masking import MultiBlock3DMasker, TubeMask

        k = cfg.video.mask
        kinds = [TubeMask((k.short_range_scale,) * 2, k.temporal_scale, k.aspect, k.short_range_blocks),
                 TubeMask((k.long_range_scale,) * 2, k.temporal_scale, k.aspect, k.long_range_blocks)]
        return MultiBlock3DMasker(self.grid(cfg), kinds, min_keep=k.min_keep, pad_context=k.pad_context)

    def tower(self, spec, cfg):
        """An image ViT of either library inflated to clips; the clip's time axis is ours."""
        from modalities.towers import OpenClipVideoTower, TimmVideoTower

        tower = TimmVideoTower if spec.library == "timm" else OpenClipVideoTower
        return tower(spec.name, cfg.video.frames, cfg.video.tubelet)

    def settle_tower(self, section, facts, key):
        """The tower's frame size, patch and normalisation, as an image tower's."""
        from .image import Image

        Image.settle_tower(self, section, facts, key)

    def tokens(self, cfg, vocab_size=None):
        from modalities.tokens import TubeletTokens

        v = cfg.video
        return TubeletTokens((v.frames, v.size, v.size), v.tubelet, v.patch, 3, v.encoder.width)  # (B, 3, T, H, W) -> (B, N, D)
