import sys
from pathlib import Path

# The DDP workers re-import test modules by name; keep tests/ importable for them.
sys.path.insert(0, str(Path(__file__).parent))
