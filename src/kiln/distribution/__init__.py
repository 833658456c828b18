"""Distribution: what leaves the build for its users. Consumer contracts (``contracts``), the
report's tables (``report``), the staged and published model repo (``publish``) and its rebuild
from the recorded sources (``verify``)."""
