"""`ConfigTuner`: a keras-tuner `Tuner` that evaluates configurations of one supernet.

Nothing is built, trained or saved per trial: `run_trial` decodes the trial's hyperparameters
into a configuration and returns the metrics of `ConfigEvaluator.evaluate` (accuracy, flops,
params). ``save_model`` is a no-op and ``load_model`` activates the trial's configuration on the
shared supernet.

Distributed search uses keras-tuner's chief/worker protocol unchanged (environment variables
``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``; workers talk to the
chief's oracle over gRPC). Only the chief's serving loop differs from keras-tuner's
``start_server``: it polls every 0.2 s for the end of the search instead of every 20 s, and stops
the gRPC server when done.
"""

import os
import time

import keras_tuner
from keras_tuner.src.distribute import utils as dist_utils
from tqdm.auto import tqdm


def is_worker():
    """True in a keras-tuner worker process (chief oracle elsewhere).

    Reads keras-tuner's ``KERASTUNER_*`` environment variables.

    Returns:
        A bool.

    Raises:
        RuntimeError: ``KERASTUNER_ORACLE_IP`` is set without the port or the tuner id.

    Example:
        >>> is_worker()  # doctest: +SKIP
        False
    """
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def is_chief():
    """True in the keras-tuner chief process (it serves the oracle).

    Returns:
        A bool (``KERASTUNER_TUNER_ID`` contains ``"chief"``).

    Raises:
        RuntimeError: ``KERASTUNER_ORACLE_IP`` is set without the port or the tuner id.
    """
    return dist_utils.is_chief_oracle()


def serve_chief(oracle, poll_interval=0.2, progress=None):
    """Serves ``oracle`` to the workers over gRPC until the search is finished.

    Args:
        oracle: the (chief's) oracle.
        poll_interval: seconds between checks for the end of the search.
        progress: optional tqdm bar, advanced as trials end.

    Raises:
        RuntimeError: the address in ``KERASTUNER_ORACLE_IP`` / ``..._PORT`` cannot be bound.
        KeyError: those environment variables are not set.

    Example:
        >>> serve_chief(oracle)  # in the chief process  # doctest: +SKIP
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        bound, error = 0, e
    else:
        error = None
    if not bound:
        raise RuntimeError(f"The chief oracle cannot listen on {address} "
                           "(KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT)") from error
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_interval)
            if progress is not None:
                progress.update(len(oracle.end_order) - progress.n)
    finally:
        server.stop(grace=1.0)


class ConfigTuner(keras_tuner.Tuner):
    """Evaluates the configurations an oracle proposes on one supernet, without training.

    Args:
        oracle: a `tips_keras.search.ConfigOracle` (or keras-tuner's client of the chief's).
        evaluator: a `tips_keras.search.ConfigEvaluator` of the supernet.
        space: the `tips_keras.search.SearchSpace` (decodes hyperparameter values).
        progress: show a tqdm progress bar.
        **kwargs: `keras_tuner.Tuner` arguments: ``directory``, ``project_name``, ``overwrite``.

    Attributes:
        results: ``(trial_id, hyperparameter values, metrics)`` of the trials this process evaluated.

    Example:
        >>> tuner = ConfigTuner(oracle, evaluator, space, directory="runs/search")  # doctest: +SKIP
        >>> tuner.search(verbose=0)  # doctest: +SKIP
    """

    def __init__(self, oracle, evaluator, space, progress=True, **kwargs):
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.evaluator = evaluator
        self.space = space
        self.progress = progress
        self.results = []
        self._bar = None

    def run_trial(self, trial, *args, **kwargs):
        """keras-tuner hook: evaluates the trial's configuration (no training).

        Args:
            trial: the keras-tuner trial.
            *args: unused.
            **kwargs: unused.

        Returns:
            The metrics of `ConfigEvaluator.evaluate` (``accuracy``, ``flops``, ``params``, ...).
        """
        vector = self.space.from_values(trial.hyperparameters.values)
        metrics = self.evaluator.evaluate(self.space.to_config(vector))
        self.results.append((trial.trial_id, dict(trial.hyperparameters.values), metrics))
        return metrics

    def save_model(self, trial_id, model, step=0):
        """No-op: every trial is a configuration of the same supernet; nothing to save.

        Args:
            trial_id: unused.
            model: unused.
            step: unused.
        """

    def load_model(self, trial):
        """Activates the trial's configuration on the shared supernet and returns the supernet.

        Args:
            trial: a keras-tuner trial.

        Returns:
            The supernet, with that configuration active.

        Example:
            >>> model = tuner.load_model(tuner.oracle.get_best_trials(1)[0])  # doctest: +SKIP
        """
        self.evaluator.model.set_config(self.space.to_config(self.space.from_values(trial.hyperparameters.values)))
        return self.evaluator.model

    # -- progress -----------------------------------------------------------------------------
    def _open_bar(self):
        if self.progress and self._bar is None:
            done = len(getattr(self.oracle, "end_order", []) or [])
            self._bar = tqdm(total=self.oracle.max_trials, initial=done, desc="configurations",
                             unit="cfg", dynamic_ncols=True)

    def on_search_begin(self):
        """keras-tuner hook: opens the progress bar (when ``progress``)."""
        super().on_search_begin()
        self._open_bar()

    def on_trial_end(self, trial):
        """keras-tuner hook: reports the trial to the oracle, saves, and advances the progress bar.

        Args:
            trial: the finished trial.
        """
        super().on_trial_end(trial)
        if self._bar is not None:
            self._bar.update(1)
            if self.results:
                self._bar.set_postfix(accuracy=f"{self.results[-1][2]['accuracy']:.3f}")

    def on_search_end(self):
        """keras-tuner hook: closes the progress bar."""
        super().on_search_end()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def search(self, *args, **kwargs):
        """Runs the search; in the chief process, serves the oracle until the workers are done.

        Args:
            *args: passed to `keras_tuner.Tuner.search` (not by the chief).
            **kwargs: passed to `keras_tuner.Tuner.search` (not by the chief).

        Example:
            >>> tuner.search(verbose=0)  # doctest: +SKIP
        """
        if is_chief():
            self.save()
            self._open_bar()
            try:
                serve_chief(self.oracle, progress=self._bar)
            finally:
                self.on_search_end()
            return
        super().search(*args, **kwargs)
