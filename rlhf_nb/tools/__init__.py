"""Tools that build the kit's assets and measure it — not part of the algorithm or the lessons.

    base_model          `make base-model`: train the embedded tiny GPT-2 and its tokenizer
    build_reward_model  `make reward-model`: train the committed reward model from simulated preferences
    smoke               `make smoke`: run notebooks/00_smoke.ipynb with papermill into runs/run_*/
    notebooks           `make notebooks`: re-execute every lesson and store its outputs
    check_install       `make check`: verify the install
    bench, bench_report, bench_trl   `make bench`: speed, memory, learning curves -> docs/benchmarks.md
"""
