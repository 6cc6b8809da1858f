"""Tables and figures regenerated from run records, byte for byte."""
