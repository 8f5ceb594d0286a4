"""Streamlit dashboard over SALE trace files (`streamlit run dashboard`). Reads files only: it never
imports the kernels or torch."""
