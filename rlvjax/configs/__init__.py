"""The packaged gin configs. A package, so that gin finds ``include 'rlvjax/configs/base.gin'`` through the
installed package from any working directory (a ``configs/`` folder in the user's own directory does not shadow it).
"""
