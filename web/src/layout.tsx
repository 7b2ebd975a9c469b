// The shared page frame (header with the brand and the navigation) and the mount helper of every page.
import "./style.css";
import type { ComponentChildren, ComponentType } from "preact";
import { render } from "preact";

type Page = "visitor" | "access" | "playground" | "console";

const links: { href: string; label: string; page: Page }[] = [
  { href: "/", label: "Request access", page: "visitor" },
  { href: "/playground", label: "Playground", page: "playground" },
  { href: "/console", label: "Console", page: "console" },
];

export function Layout({ page, children }: { page: Page; children: ComponentChildren }) {
  return (
    <>
      <header class="site-header">
        <div class="container header-inner">
          <a class="brand" href="/">
            Lucena One
          </a>
          <nav aria-label="Main">
            {links.map((l) => (
              <a key={l.href} href={l.href} aria-current={l.page === page ? "page" : undefined}>
                {l.label}
              </a>
            ))}
          </nav>
        </div>
      </header>
      <main class="container">{children}</main>
    </>
  );
}

/** Renders a page's app inside the layout into #app (the server's shell gives the page its title). */
export function mount(page: Page, App: ComponentType) {
  const root = document.getElementById("app");
  if (root)
    render(
      <Layout page={page}>
        <App />
      </Layout>,
      root,
    );
}

/** An error line (role=alert) or nothing. */
export function ErrorText({ text, testid }: { text: string | null; testid?: string }) {
  if (!text) return null;
  return (
    <p class="error" role="alert" data-testid={testid}>
      {text}
    </p>
  );
}
