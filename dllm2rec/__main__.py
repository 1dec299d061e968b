import sys

from dllm2rec.cli import main

sys.exit(main())
