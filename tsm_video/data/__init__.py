"""Data: video IO, OpenVid-1M index, clip sampling, streaming datasets, latent cache."""

from tsm_video.data.video_io import VideoReadError, read_frames, write_mp4

__all__ = ["VideoReadError", "read_frames", "write_mp4"]
