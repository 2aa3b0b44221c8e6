"""Periodic evaluation during training (TEST.EVAL_PERIOD epochs) with the same evaluator as the final one."""

from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from yacs.config import CfgNode

from compressreid.data.records import DatasetSplits
from compressreid.engine.loop import HookBase
from compressreid.engine.resume import preserved_rng

logger = logging.getLogger(__name__)

# The metrics logged and written to tensorboard after each evaluation.
LOGGED_METRICS = ("mAP", "rank1", "mINP")


class EvalHook(HookBase):
    """Every ``period`` iterations (never at the last one: the tool evaluates the final model with gates and
    plots), rank 0 evaluates on ``test_sets`` while the other ranks wait at a barrier.

    Evaluation runs with the training random generators preserved, so it never changes the training stream,
    and the task is put back in train mode afterwards. The history is kept in the hook's state for resuming.
    """

    def __init__(self, cfg: CfgNode, test_sets: Sequence[DatasetSplits], period: int, device: torch.device,
                 is_main: bool = True):
        self.cfg, self.test_sets, self.period, self.device, self.is_main = cfg, list(test_sets), period, device, is_main
        self.history: List[Dict[str, float]] = []

    def after_step(self) -> None:
        it = self.loop.iter
        if not self.period or it % self.period or it >= self.loop.max_iter:
            return
        if self.is_main:
            with preserved_rng():
                self.history.extend(self.evaluate(it))
        self.loop.dist.barrier()

    def evaluate(self, iteration: int) -> List[Dict[str, float]]:
        from compressreid.evaluation.evaluator import ReIDEvaluator  # evaluation pulls in faiss: only when used

        evaluator = ReIDEvaluator.from_config(self.cfg)
        model = self.loop.task.model
        records = []
        try:
            model.eval()
            for test_set in self.test_sets:
                metrics = evaluator.evaluate_model(model, test_set, self.cfg, self.device, progress=False).metrics
                logger.info("iter %d %s: mAP %.2f  Rank-1 %.2f  mINP %.2f", iteration, test_set.name,
                            metrics["mAP"], metrics["rank1"], metrics["mINP"])
                for name in LOGGED_METRICS:
                    self.loop.put_scalar(f"eval/{test_set.name}/{name}", metrics[name])
                records.append({"iteration": iteration, "dataset": test_set.name,
                                **{name: float(metrics[name]) for name in LOGGED_METRICS}})
        finally:
            model.train()
        return records

    def state_dict(self) -> Dict[str, object]:
        return {"history": self.history}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.history = list(state["history"])
