"""The numbers behind the compressed formats: pack, unpack, round, dequantize (torch only).

Kept apart from the op declarations (`compiler.dialect.spk`) so that what a pass stores and
what a kernel reads come from one definition, and the verifier stays free of numerics.
"""
