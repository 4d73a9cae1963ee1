from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class MultiVector(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Vector]
    def __init__(self, rows: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("text", "vector", "multi_vector")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MULTI_VECTOR_FIELD_NUMBER: _ClassVar[int]
    text: str
    vector: Vector
    multi_vector: MultiVector
    def __init__(self, text: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., multi_vector: _Optional[_Union[MultiVector, _Mapping]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "encoder", "metric", "index", "exist_ok", "lexical", "lexical_options", "text_field", "shards")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    encoder: str
    metric: str
    index: str
    exist_ok: bool
    lexical: bool
    lexical_options: LexicalOptions
    text_field: str
    shards: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., encoder: _Optional[str] = ..., metric: _Optional[str] = ..., index: _Optional[str] = ..., exist_ok: _Optional[bool] = ..., lexical: _Optional[bool] = ..., lexical_options: _Optional[_Union[LexicalOptions, _Mapping]] = ..., text_field: _Optional[str] = ..., shards: _Optional[int] = ...) -> None: ...

class LexicalOptions(_message.Message):
    __slots__ = ("language", "stopwords", "k1", "b", "method")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    STOPWORDS_FIELD_NUMBER: _ClassVar[int]
    K1_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    language: str
    stopwords: str
    k1: float
    b: float
    method: str
    def __init__(self, language: _Optional[str] = ..., stopwords: _Optional[str] = ..., k1: _Optional[float] = ..., b: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class Fusion(_message.Message):
    __slots__ = ("method", "weight", "rrf_k", "depth")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    method: str
    weight: float
    rrf_k: float
    depth: int
    def __init__(self, method: _Optional[str] = ..., weight: _Optional[float] = ..., rrf_k: _Optional[float] = ..., depth: _Optional[int] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dim", "metric", "index", "encoder", "count", "bytes_on_disk", "lexical", "lexical_options", "text_field", "fusion", "lexical_count", "multi_vector", "ram_bytes", "disk_bytes", "shards")
    class RamBytesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class DiskBytesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_ON_DISK_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    MULTI_VECTOR_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: str
    index: str
    encoder: str
    count: int
    bytes_on_disk: int
    lexical: bool
    lexical_options: LexicalOptions
    text_field: str
    fusion: Fusion
    lexical_count: int
    multi_vector: bool
    ram_bytes: _containers.ScalarMap[str, int]
    disk_bytes: _containers.ScalarMap[str, int]
    shards: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., index: _Optional[str] = ..., encoder: _Optional[str] = ..., count: _Optional[int] = ..., bytes_on_disk: _Optional[int] = ..., lexical: _Optional[bool] = ..., lexical_options: _Optional[_Union[LexicalOptions, _Mapping]] = ..., text_field: _Optional[str] = ..., fusion: _Optional[_Union[Fusion, _Mapping]] = ..., lexical_count: _Optional[int] = ..., multi_vector: _Optional[bool] = ..., ram_bytes: _Optional[_Mapping[str, int]] = ..., disk_bytes: _Optional[_Mapping[str, int]] = ..., shards: _Optional[int] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "multi_vectors", "texts", "payloads", "add_only")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MULTI_VECTORS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    ADD_ONLY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    multi_vectors: _containers.RepeatedCompositeFieldContainer[MultiVector]
    texts: _containers.RepeatedScalarFieldContainer[str]
    payloads: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    add_only: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., multi_vectors: _Optional[_Iterable[_Union[MultiVector, _Mapping]]] = ..., texts: _Optional[_Iterable[str]] = ..., payloads: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., add_only: _Optional[bool] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("id", "found", "vector", "multi_vector", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MULTI_VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    found: bool
    vector: Vector
    multi_vector: MultiVector
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., found: _Optional[bool] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., multi_vector: _Optional[_Union[MultiVector, _Mapping]] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "k", "where", "params", "mode", "text", "fusion", "weight", "rrf_k", "depth", "partial", "omit_payloads")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    OMIT_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: Query
    k: int
    where: _struct_pb2.Struct
    params: _struct_pb2.Struct
    mode: str
    text: str
    fusion: str
    weight: float
    rrf_k: float
    depth: int
    partial: bool
    omit_payloads: bool
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., k: _Optional[int] = ..., where: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[str] = ..., text: _Optional[str] = ..., fusion: _Optional[str] = ..., weight: _Optional[float] = ..., rrf_k: _Optional[float] = ..., depth: _Optional[int] = ..., partial: _Optional[bool] = ..., omit_payloads: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    payload: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "missing_shards")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., missing_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "where", "params", "mode", "texts", "fusion", "weight", "rrf_k", "depth", "partial", "omit_payloads")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    OMIT_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    k: int
    where: _struct_pb2.Struct
    params: _struct_pb2.Struct
    mode: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    fusion: str
    weight: float
    rrf_k: float
    depth: int
    partial: bool
    omit_payloads: bool
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., k: _Optional[int] = ..., where: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., fusion: _Optional[str] = ..., weight: _Optional[float] = ..., rrf_k: _Optional[float] = ..., depth: _Optional[int] = ..., partial: _Optional[bool] = ..., omit_payloads: _Optional[bool] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results", "missing_shards")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ..., missing_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class StreamSearchRequest(_message.Message):
    __slots__ = ("tag", "search")
    TAG_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    tag: int
    search: SearchRequest
    def __init__(self, tag: _Optional[int] = ..., search: _Optional[_Union[SearchRequest, _Mapping]] = ...) -> None: ...

class StreamSearchResponse(_message.Message):
    __slots__ = ("tag", "result", "code", "message")
    TAG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    tag: int
    result: SearchResponse
    code: int
    message: str
    def __init__(self, tag: _Optional[int] = ..., result: _Optional[_Union[SearchResponse, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SetFusionRequest(_message.Message):
    __slots__ = ("collection", "fusion", "weight", "rrf_k", "depth")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    collection: str
    fusion: str
    weight: float
    rrf_k: float
    depth: int
    def __init__(self, collection: _Optional[str] = ..., fusion: _Optional[str] = ..., weight: _Optional[float] = ..., rrf_k: _Optional[float] = ..., depth: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("search_requests", "search_batches", "mean_batch_size", "max_batch_size_seen", "cancelled", "deadline_exceeded", "rpcs", "errors", "max_batch", "max_wait_ms", "uptime_seconds", "in_flight", "cpu_seconds", "stream_queries", "inline_searches")
    class RpcsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SEARCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_SEEN_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    RPCS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STREAM_QUERIES_FIELD_NUMBER: _ClassVar[int]
    INLINE_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    search_requests: int
    search_batches: int
    mean_batch_size: float
    max_batch_size_seen: int
    cancelled: int
    deadline_exceeded: int
    rpcs: _containers.ScalarMap[str, int]
    errors: _containers.ScalarMap[str, int]
    max_batch: int
    max_wait_ms: float
    uptime_seconds: float
    in_flight: int
    cpu_seconds: float
    stream_queries: int
    inline_searches: int
    def __init__(self, search_requests: _Optional[int] = ..., search_batches: _Optional[int] = ..., mean_batch_size: _Optional[float] = ..., max_batch_size_seen: _Optional[int] = ..., cancelled: _Optional[int] = ..., deadline_exceeded: _Optional[int] = ..., rpcs: _Optional[_Mapping[str, int]] = ..., errors: _Optional[_Mapping[str, int]] = ..., max_batch: _Optional[int] = ..., max_wait_ms: _Optional[float] = ..., uptime_seconds: _Optional[float] = ..., in_flight: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., stream_queries: _Optional[int] = ..., inline_searches: _Optional[int] = ...) -> None: ...
