//! The pure planner (design.md §2, §5): plan spec + inventory + observed state + now → decisions.
