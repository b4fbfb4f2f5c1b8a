package moe4j.tensor;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Runs every test of a class inside its own {@link MemoryScope}, as a training step runs: the tensors a
 * test makes are freed when it ends. Use with {@code @ExtendWith(ScopePerTest.class)}.
 */
public final class ScopePerTest implements BeforeEachCallback, AfterEachCallback {
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(ScopePerTest.class);

    @Override
    public void beforeEach(ExtensionContext context) {
        context.getStore(NS).put("scope", MemoryScope.open());
    }

    @Override
    public void afterEach(ExtensionContext context) {
        context.getStore(NS).get("scope", MemoryScope.class).close();
    }
}
