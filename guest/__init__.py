"""The ftemu guest kernel sources (C + assembly); emu.kbuild builds them with make."""
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
