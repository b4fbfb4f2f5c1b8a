package moe4j.distributed;

/** The work of one rank under {@link Distributed#run}: it gets the world group and returns its result. */
@FunctionalInterface
public interface RankFunction<T> {
    T run(ProcessGroup world) throws Exception;
}
