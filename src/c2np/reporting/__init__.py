"""Results tables: raw metrics and the paper's Table 5 normalisation."""
