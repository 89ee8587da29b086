"""SyncTalk Workbench: audio-driven lip-sync video of one person."""
__version__ = "0.1.0"
