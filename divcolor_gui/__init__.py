"""divcolor's desktop app (PySide6).

The GUI only adapts the engine facade (``engine.colorizer``, ``engine.io``, ``engine.strokes``,
``engine.errors``) to widgets; it holds no model logic. Modules are split by what the user sees:
``main_window`` (actions, menus, docks), ``canvas`` (zoom/pan/compare/strokes), ``gallery``
(samples by method), ``brush_panel``, ``overlay`` (attention), ``models_dialog``; plus the
non-visual ``document`` (editing state, projects), ``commands`` (undo), ``jobs`` (worker
threads, latest-wins), ``settings``, ``theme`` and ``imaging``.
"""
