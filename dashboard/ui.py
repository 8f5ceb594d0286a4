"""Small Streamlit helpers shared by the pages: figures with HTML export, tables with CSV export."""
import streamlit as st

from dashboard.data import to_csv


def traces():
    return st.session_state["traces"]


def figure(fig, key: str):
    """The figure (PNG export from its toolbar's camera button) and an HTML download."""
    st.plotly_chart(fig, width="stretch", key=f"chart-{key}")
    st.download_button("Download figure as HTML", fig.to_html(include_plotlyjs="cdn", full_html=True),
                       file_name=f"{key}.html", mime="text/html", key=f"html-{key}")


def table(rows: list[dict], key: str, columns: list[str] | None = None):
    if not rows:
        st.info("nothing to show")
        return
    columns = columns or list(rows[0])
    st.dataframe([{c: r.get(c) for c in columns} for r in rows], width="stretch")
    st.download_button("Download CSV", to_csv(rows, columns), file_name=f"{key}.csv", mime="text/csv", key=f"csv-{key}")


def need(condition: bool, message: str) -> bool:
    if not condition:
        st.info(message)
    return condition
