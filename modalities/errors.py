"""Errors raised on bad input; they name the file, row or key and the reason.

Each DataError also carries a short machine-readable `reason` code, so a data scan can count
bad samples by kind ('3 missing_file, 1 undecodable') without parsing messages.
"""

INVALID = "invalid"
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
UNDECODABLE = "undecodable"
ABSURD_SIZE = "absurd_size"
EMPTY_TEXT = "empty_text"
ZERO_LENGTH_AUDIO = "zero_length_audio"
NON_FINITE_AUDIO = "non_finite_audio"
BAD_SAMPLE_RATE = "bad_sample_rate"
UNSUPPORTED_VALUE = "unsupported_value"
EMPTY_ROW = "empty_row"
ZERO_FRAMES = "zero_frames"

REASONS: dict[str, str] = {
    INVALID: "unusable for another reason (the default)",
    MISSING_FILE: "the path does not exist or is not a file",
    EMPTY_FILE: "the file (or bytes value) has 0 bytes",
    UNDECODABLE: "not an image/audio/video file (or no video stream), truncated or corrupt",
    ABSURD_SIZE: "image side < 2 px or decompression bomb, audio > 4 h, video frame over 4096 x 4096 px, "
                 "caption > 100,000 characters",
    EMPTY_TEXT: "caption is blank or not a string",
    ZERO_LENGTH_AUDIO: "audio with zero samples or zero channels",
    NON_FINITE_AUDIO: "audio with NaN or inf samples",
    BAD_SAMPLE_RATE: "audio sample rate missing, not an integer or out of range",
    UNSUPPORTED_VALUE: "a value of a type or shape we cannot read",
    EMPTY_ROW: "a manifest row with no value in any modality column",
    ZERO_FRAMES: "a video with no frame to decode",
}


class DataError(ValueError):
    """A sample could not be read or is unusable. The message says which one and why;
    `reason` is one of REASONS (unknown codes are kept as given, not rejected)."""

    def __init__(self, message: str, reason: str = INVALID):
        super().__init__(message)
        self.reason = reason
