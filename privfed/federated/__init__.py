"""FedAvg core: clients, server, server optimizers, sampling, history and observers."""

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.evaluation import evaluate
from privfed.federated.history import History, RoundRecord
from privfed.federated.mechanism import UpdateMechanism
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
from privfed.federated.sampling import ClientSampler, derive_seed
from privfed.federated.server import Aggregator, BudgetSpent, Server, TrainingDivergedError

__all__ = [
    "Aggregator",
    "Client",
    "ClientSampler",
    "ClientUpdate",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FlatParameters",
    "History",
    "LocalTraining",
    "Observer",
    "ParamSpec",
    "RoundRecord",
    "SERVER_OPTIMIZERS",
    "Server",
    "ServerOptimizer",
    "TrainingDivergedError",
    "BudgetSpent",
    "UpdateMechanism",
    "bind_flat_parameters",
    "derive_seed",
    "evaluate",
    "make_server_optimizer",
]
