"""The released catalogue: the data model (67 columns of Table 5), the
Parquet and FITS writers, the ledger merge and the release folder.
"""
