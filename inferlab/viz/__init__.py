"""Plots and widget callbacks for the notebooks: one module per notebook.

Every widget callback is a plain function here (tested by calling it with the widget's values);
each notebook also draws the default state as a static plot so it reads without a kernel.
"""
