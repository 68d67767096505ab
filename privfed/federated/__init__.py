"""FedAvg core: clients, trainers, the update pipeline, schedules, the server's round.

Importing it loads neither an engine nor a secure-aggregation protocol nor a privacy
mechanism (no TenSEAL, cryptography or Opacus): those plug in through the interfaces here
(:class:`Engine`, :class:`UpdateStage`, :class:`LocalTrainer`, :class:`ParticipationPolicy`).
"""

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.engine import (
    Aggregate,
    AggregationProtocol,
    Engine,
    RoundPlan,
    RoundSkipped,
    RunningAggregate,
    StreamingAggregation,
    TrainingDivergedError,
    TrainJob,
    TrainReport,
)
from privfed.federated.evaluation import evaluate
from privfed.federated.history import History, RoundRecord
from privfed.federated.inprocess import InProcessEngine
from privfed.federated.observers import Observer
from privfed.federated.optimizers import (
    SERVER_OPTIMIZERS,
    FedAdam,
    FedAvg,
    FedAvgM,
    ServerOptimizer,
    make_server_optimizer,
)
from privfed.federated.params import FlatParameters, ParamSpec, bind_flat_parameters
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.sampling import BatchOrder, ClientSampler, derive_seed
from privfed.federated.schedules import (
    BudgetSpent,
    Cohort,
    FedBuff,
    LatencyModel,
    Schedule,
    SynchronousRounds,
    synchronous_times,
)
from privfed.federated.server import Server
from privfed.federated.stages import Pipeline, ServerAggregate, UpdateStage
from privfed.federated.trainer import LocalTrainer, SGDTrainer
from privfed.federated.weighting import SampleWeighting, UniformWeighting, Weighting

__all__ = [
    "Aggregate",
    "AggregationProtocol",
    "BatchOrder",
    "BudgetSpent",
    "Client",
    "ClientSampler",
    "ClientUpdate",
    "Cohort",
    "Engine",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FlatParameters",
    "History",
    "InProcessEngine",
    "LatencyModel",
    "LocalTrainer",
    "LocalTraining",
    "Observer",
    "ParamSpec",
    "ParticipationPolicy",
    "Pipeline",
    "RoundPlan",
    "RoundRecord",
    "RoundSkipped",
    "RunningAggregate",
    "SERVER_OPTIMIZERS",
    "SGDTrainer",
    "SampleWeighting",
    "Schedule",
    "Server",
    "ServerAggregate",
    "ServerOptimizer",
    "StreamingAggregation",
    "SynchronousRounds",
    "TrainJob",
    "TrainReport",
    "TrainingDivergedError",
    "UniformWeighting",
    "UpdateStage",
    "Weighting",
    "bind_flat_parameters",
    "derive_seed",
    "evaluate",
    "make_server_optimizer",
    "synchronous_times",
]
