"""Results folders read back: report rows from every ``*/summary.json``, the statements derived
from them, and the comparison of two folders. Nothing here renders or writes."""
