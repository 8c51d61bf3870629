"""The Streamlit console (see the console issue; not built yet)."""
