import os
import sys

# the project is flat scripts, not a package: make them importable from the tests
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
