-- Blind-arena pair sampling log: which pair was drawn for a comparison, how many votes that
-- pair had then, and the probability it was drawn with (weights 1 / (1 + votes)).
CREATE TABLE arena_samples (
    comparison_id  BIGINT  PRIMARY KEY REFERENCES comparisons(id) ON DELETE CASCADE,
    model_a_id     BIGINT  NOT NULL REFERENCES models(id),
    model_b_id     BIGINT  NOT NULL REFERENCES models(id),
    pair_votes     BIGINT  NOT NULL,
    candidates     BIGINT  NOT NULL,
    probability    DOUBLE PRECISION NOT NULL,
    created_at     BIGINT  NOT NULL
);
-- One vote per rater and comparison, enforced by the database (two tabs, a double submit).
CREATE UNIQUE INDEX votes_rater_comparison ON votes(rater_id, comparison_id);
